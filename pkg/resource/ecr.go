package resource

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/ecr"
	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/pkg/registry"
)

// ecrTimeout bounds a step's token exchange: credentials and every token.
const ecrTimeout = 2 * time.Minute

// loginClient fetches ECR tokens for the source (see ecrLogin), then
// builds its registry client.
func loginClient(ctx context.Context, env Env, s *session, src *protocol.Source) (*registry.Client, error) {
	creds, err := ecrLogin(ctx, s, *src, nil)
	if err != nil {
		return nil, err
	}
	return registryClient(env, &creds, s.log)
}

// ecrNeed is an ECR registry a step needs a token for.
type ecrNeed struct {
	host     string
	required bool // the step fails without it
}

// ecrLogin exchanges AWS credentials for ECR tokens and returns src with
// them as its credentials, as if the user had written them: the
// repository's token becomes username/password (unless those are set), the
// other ECR registries' tokens become additional_private_registries
// entries (unless the user gave one for that host). Every client built
// from the result then uses them. The AWS keys come from the source, or
// the default credential chain when it has none. A token the repository
// needs is required; one for another registry is best effort without
// explicit keys (the pull that needs it fails later with the registry's
// own message).
func ecrLogin(ctx context.Context, s *session, src protocol.Source, others []string) (protocol.Source, error) {
	keys, err := ecrKeys(&src)
	if err != nil {
		return src, err
	}
	explicit := keys.AccessKeyID != ""
	repo := repoHost(src.Repository)
	needs := ecrNeeds(s, &src, repo, others, explicit)
	if len(needs) == 0 {
		if _, repoIsECR := ecr.ParseHost(repo); explicit && !repoIsECR {
			s.log.Warnf("source.aws_access_key_id is set but %s is not an ECR registry (<account>.dkr.ecr.<region>.amazonaws.com) and no ECR image is pulled; the AWS keys are unused", repo)
		}
		return src, nil
	}

	// The SDK's HTTP client has no overall deadline: an endpoint that never
	// answers must not hang the step until Concourse's timeout.
	ctx, cancel := context.WithTimeout(ctx, ecrTimeout)
	defer cancel()
	ex, err := ecr.New(ctx, keys)
	if err != nil {
		return src, noExchanger(s, repo, needs, explicit, err)
	}
	s.redact.Add(ex.Secrets...)
	s.log.Debugf("ECR: AWS credentials from %s", ex.Source)
	return ecrTokens(ctx, s, ex, src, repo, needs, explicit)
}

// ecrKeys are the source's AWS keys, checked: both halves or neither.
func ecrKeys(src *protocol.Source) (ecr.Keys, error) {
	keys := ecr.Keys{AccessKeyID: src.AWSAccessKeyID, SecretAccessKey: src.AWSSecretAccessKey, SessionToken: src.AWSSessionToken}
	if (keys.AccessKeyID == "") != (keys.SecretAccessKey == "") {
		return keys, errors.New("source.aws_access_key_id and source.aws_secret_access_key: set both or neither")
	}
	if keys.SessionToken != "" && keys.AccessKeyID == "" {
		return keys, errors.New("source.aws_session_token needs source.aws_access_key_id and source.aws_secret_access_key (the temporary credentials it belongs to)")
	}
	return keys, nil
}

// ecrNeeds lists the ECR registries that need a token: the repository's
// unless source.username is set, and each other one the user gave no
// credentials for.
func ecrNeeds(s *session, src *protocol.Source, repo string, others []string, explicit bool) []ecrNeed {
	var needs []ecrNeed
	if _, repoIsECR := ecr.ParseHost(repo); repoIsECR {
		if src.Username == "" {
			needs = append(needs, ecrNeed{repo, true})
		} else if explicit {
			s.log.Infof("ECR: using source.username/password for %s; the AWS keys serve only other ECR registries", repo)
		}
	}
	given := func(h string) bool {
		return slices.ContainsFunc(src.AdditionalPrivateRegistries, func(r protocol.PrivateRegistry) bool {
			return registry.NormalizeHost(r.Registry) == h
		})
	}
	for _, h := range others {
		if _, ok := ecr.ParseHost(h); !ok || h == repo || slices.ContainsFunc(needs, func(n ecrNeed) bool { return n.host == h }) || given(h) {
			continue
		}
		needs = append(needs, ecrNeed{h, explicit})
	}
	return needs
}

// noExchanger says why no AWS credentials could be had: an error, or nil
// with a warning when no token is required.
func noExchanger(s *session, repo string, needs []ecrNeed, explicit bool, err error) error {
	if !explicit && !slices.ContainsFunc(needs, func(n ecrNeed) bool { return n.required }) {
		s.log.Warnf("ECR: %s named in the build; no AWS credentials to get a token for it (set source.aws_access_key_id and source.aws_secret_access_key): %v", hostList(needs, func(n ecrNeed) string { return n.host }), err)
		return nil
	}
	if errors.Is(err, ecr.ErrNoCredentials) {
		return fmt.Errorf("%s is an ECR registry and source.username/password are not set, so an ECR token is needed, but no AWS credentials were found: set source.aws_access_key_id and source.aws_secret_access_key (plus aws_session_token for temporary credentials), or run the worker with an AWS role: %w", repo, err)
	}
	return fmt.Errorf("ECR: source.aws_access_key_id: %w", err)
}

// ecrTokens gets each needed token and returns src with them.
func ecrTokens(ctx context.Context, s *session, ex *ecr.Exchanger, src protocol.Source, repo string, needs []ecrNeed, explicit bool) (protocol.Source, error) {
	out := src
	// A copy: appending must not write into the request's array.
	out.AdditionalPrivateRegistries = slices.Clone(src.AdditionalPrivateRegistries)
	for _, n := range needs {
		tok, err := ex.Token(ctx, n.host)
		if err != nil {
			err = explainECR(n.host, ex.Source, err)
			if !n.required && !explicit {
				s.log.Warnf("%v; pulls from %s go without credentials", err, n.host)
				continue
			}
			return src, err
		}
		s.redact.Add(tok.Password, tok.Raw)
		s.log.Infof("ECR: token for %s (valid until %s)", n.host, tok.Expires.UTC().Format("2006-01-02 15:04 MST"))
		if n.host == repo {
			out.Username, out.Password = tok.Username, tok.Password
		} else {
			out.AdditionalPrivateRegistries = append(out.AdditionalPrivateRegistries,
				protocol.PrivateRegistry{Registry: n.host, Username: tok.Username, Password: tok.Password})
		}
	}
	return out, nil
}

// explainECR says what to do about a failed token exchange.
func explainECR(host, credSource string, err error) error {
	var api *ecr.APIError
	if errors.As(err, &api) && api.Refused() {
		if credSource == "source keys" {
			return fmt.Errorf("ECR token for %s: AWS refused the credentials: check source.aws_access_key_id, aws_secret_access_key and aws_session_token (and that they may call ecr:GetAuthorizationToken in %s): %w", host, api.Region, err)
		}
		return fmt.Errorf("ECR token for %s: AWS refused the credentials from %s (the default credential chain; source.aws_access_key_id is not set): %w", host, credSource, err)
	}
	return fmt.Errorf("ECR token for %s: %w", host, err)
}

// dockerfileECRHosts lists the ECR registries a Dockerfile pulls from:
// hosts in FROM lines, in ARG defaults (FROM ${BASE}), and in COPY --from.
func dockerfileECRHosts(dockerfile string) []string {
	var hosts []string
	for _, line := range logicalLines(dockerfile) {
		instr, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch strings.ToUpper(instr) {
		case "FROM", "ARG":
			hosts = append(hosts, ecr.FindHosts(rest)...)
		case "COPY":
			for _, f := range strings.Fields(rest) {
				if v, ok := strings.CutPrefix(f, "--from="); ok {
					hosts = append(hosts, ecr.FindHosts(v)...)
				}
			}
		}
	}
	return dedupe(hosts)
}

func dedupe(list []string) []string {
	var out []string
	for _, s := range list {
		out = appendUnique(out, s)
	}
	return out
}

// logicalLines joins Dockerfile continuation lines (trailing backslash) and
// drops comments.
func logicalLines(text string) []string {
	var out []string
	var cur strings.Builder
	for _, l := range strings.Split(text, "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "#") {
			continue
		}
		if c, ok := strings.CutSuffix(t, "\\"); ok {
			cur.WriteString(c + " ")
			continue
		}
		cur.WriteString(t)
		out = append(out, cur.String())
		cur.Reset()
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// registryAuth is the daemon's (and BuildKit's) credentials for a source:
// the repository's and the additional registries'.
func registryAuth(src *protocol.Source) engine.RegistryAuth {
	creds := map[string]engine.Credentials{}
	if src.Username != "" {
		creds[repoHost(src.Repository)] = engine.Credentials{Username: src.Username, Password: src.Password}
	}
	for _, r := range src.AdditionalPrivateRegistries {
		creds[r.Registry] = engine.Credentials{Username: r.Username, Password: r.Password}
	}
	return engine.NewRegistryAuth(creds)
}

func hostList[T any](items []T, f func(T) string) string {
	s := make([]string, len(items))
	for i, it := range items {
		s[i] = f(it)
	}
	return strings.Join(s, ", ")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
