// Package ecr turns AWS credentials into registry credentials for Amazon
// ECR: it recognises ECR registry hosts and exchanges AWS credentials for an
// authorization token (ECR GetAuthorizationToken).
//
// It uses the AWS SDK for Go v2 rather than hand-written requests: SigV4
// signing and the default credential chain (environment, shared config and
// credentials files, web identity, ECS and EC2 roles) are the SDK's, and so
// behave exactly as every other AWS tool on the machine does.
package ecr

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awsecr "github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/aws/smithy-go"
)

// hostPattern matches ECR private registry hosts:
// <12-digit account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn].
var hostPattern = regexp.MustCompile(`^(\d{12})\.dkr\.ecr(-fips)?\.([a-z]{2}(?:-[a-z]+)+-\d+)\.amazonaws\.com(\.cn)?$`)

// findPattern finds ECR hosts inside text (Dockerfile lines, build args).
var findPattern = regexp.MustCompile(`\b\d{12}\.dkr\.ecr(?:-fips)?\.[a-z]{2}(?:-[a-z]+)+-\d+\.amazonaws\.com(?:\.cn)?\b`)

// Registry is a parsed ECR registry host.
type Registry struct {
	Host    string // "123456789012.dkr.ecr.us-east-1.amazonaws.com"
	Account string
	Region  string
	FIPS    bool
}

// ParseHost recognises an ECR registry host ("host" or "host:443"; any
// other port is not ECR).
func ParseHost(host string) (Registry, bool) {
	h := strings.TrimSuffix(strings.ToLower(host), ":443")
	m := hostPattern.FindStringSubmatch(h)
	if m == nil {
		return Registry{}, false
	}
	return Registry{Host: h, Account: m[1], Region: m[3], FIPS: m[2] != ""}, true
}

// FindHosts lists the ECR registry hosts named anywhere in text, once
// each, in order of appearance.
func FindHosts(text string) []string {
	var out []string
	seen := map[string]bool{}
	for _, h := range findPattern.FindAllString(strings.ToLower(text), -1) {
		if !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out
}

// Keys are explicit AWS credentials. The zero value means: use the default
// credential chain.
type Keys struct {
	AccessKeyID, SecretAccessKey, SessionToken string
}

// Token is registry credentials from ECR.
type Token struct {
	Username, Password string
	// Raw is the base64 token as ECR sent it: as secret as Password.
	Raw     string
	Expires time.Time
}

// Exchanger fetches tokens with one set of AWS credentials.
type Exchanger struct {
	cfg aws.Config
	// Secrets are the AWS secrets it signs with (from Keys or the default
	// chain), for the caller's log masking.
	Secrets []string
	// Source says where the credentials came from ("source keys",
	// "EnvConfigCredentials", ...), for logs.
	Source string
}

// ErrNoCredentials is returned by New when the default chain found none.
var ErrNoCredentials = errors.New("no AWS credentials found")

// New resolves the credentials once: explicit keys, else the default chain.
// It talks to the network only for the chain's remote providers (web
// identity, ECS, EC2 metadata).
func New(ctx context.Context, keys Keys) (*Exchanger, error) {
	// The region is set per request (it comes from the registry host); this
	// placeholder only keeps the loader from failing on a machine with
	// none configured.
	opts := []func(*config.LoadOptions) error{config.WithRegion("us-east-1")}
	if keys.AccessKeyID != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(keys.AccessKeyID, keys.SecretAccessKey, keys.SessionToken)))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("loading the AWS configuration: %w", err)
	}
	if cfg.Credentials == nil {
		return nil, ErrNoCredentials
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoCredentials, err)
	}
	e := &Exchanger{cfg: cfg, Secrets: []string{creds.SecretAccessKey, creds.SessionToken}, Source: creds.Source}
	if keys.AccessKeyID != "" {
		e.Source = "source keys"
	}
	return e, nil
}

// Token fetches an authorization token for the registry at host, from the
// ECR API of the host's region.
func (e *Exchanger) Token(ctx context.Context, host string) (Token, error) {
	r, ok := ParseHost(host)
	if !ok {
		return Token{}, fmt.Errorf("%s is not an ECR registry host", host)
	}
	cli := awsecr.NewFromConfig(e.cfg, func(o *awsecr.Options) {
		o.Region = r.Region
		if r.FIPS {
			o.EndpointOptions.UseFIPSEndpoint = aws.FIPSEndpointStateEnabled
		}
	})
	out, err := cli.GetAuthorizationToken(ctx, &awsecr.GetAuthorizationTokenInput{})
	if err != nil {
		return Token{}, &APIError{Host: host, Region: r.Region, Err: err}
	}
	if len(out.AuthorizationData) == 0 || out.AuthorizationData[0].AuthorizationToken == nil {
		return Token{}, fmt.Errorf("ECR in %s answered without an authorization token", r.Region)
	}
	d := out.AuthorizationData[0]
	raw := aws.ToString(d.AuthorizationToken)
	dec, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return Token{}, fmt.Errorf("ECR in %s answered with a token that is not base64: %w", r.Region, err)
	}
	user, pass, ok := strings.Cut(string(dec), ":")
	if !ok || user == "" || pass == "" {
		return Token{}, fmt.Errorf("ECR in %s answered with a token that is not user:password", r.Region)
	}
	return Token{Username: user, Password: pass, Raw: raw, Expires: aws.ToTime(d.ExpiresAt)}, nil
}

// APIError is a failed GetAuthorizationToken.
type APIError struct {
	Host, Region string
	Err          error
}

// Code is the AWS error code ("UnrecognizedClientException"), or "".
func (e *APIError) Code() string {
	var api smithy.APIError
	if errors.As(e.Err, &api) {
		return api.ErrorCode()
	}
	return ""
}

// Refused says whether AWS rejected the credentials themselves (wrong,
// expired or not allowed), as opposed to a network or service failure.
func (e *APIError) Refused() bool {
	switch e.Code() {
	case "UnrecognizedClientException", "InvalidSignatureException", "SignatureDoesNotMatch",
		"InvalidClientTokenId", "ExpiredTokenException", "ExpiredToken", "AccessDeniedException",
		"IncompleteSignature", "MissingAuthenticationTokenException":
		return true
	}
	return false
}

func (e *APIError) Error() string {
	var api smithy.APIError
	if errors.As(e.Err, &api) {
		return fmt.Sprintf("ECR GetAuthorizationToken in %s: %s: %s", e.Region, api.ErrorCode(), api.ErrorMessage())
	}
	return fmt.Sprintf("ECR GetAuthorizationToken in %s: %v", e.Region, e.Err)
}

func (e *APIError) Unwrap() error { return e.Err }
