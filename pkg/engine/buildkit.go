package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/cli/cli/config/configfile"
	clitypes "github.com/docker/cli/cli/config/types"
	"github.com/docker/docker/api/types/build"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/auth"
	"github.com/moby/buildkit/session/auth/authprovider"
	"github.com/moby/buildkit/session/secrets/secretsprovider"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Aux message IDs of a BuildKit build stream.
const (
	auxBuildKitTrace = "moby.buildkit.trace"
	auxImageID       = "moby.image.id"
)

// InlineCacheArg makes BuildKit write cache metadata into the image config,
// so a later build can use the pushed image as cache_from.
const InlineCacheArg = "BUILDKIT_INLINE_CACHE"

// buildKitSession starts the client side of a BuildKit session over the
// engine's /session endpoint. It carries registry credentials (BuildKit
// ignores a build's AuthConfigs) and the build secrets. stop ends it and
// waits until its connection is closed.
func buildKitSession(ctx context.Context, cli Client, o BuildOptions, log *logrus.Entry) (id string, stop func(), err error) {
	// The shared key names a local cache of synced folders; we sync none.
	s, err := session.NewSession(ctx, randomHex())
	if err != nil {
		return "", nil, fmt.Errorf("buildkit session: %w", err)
	}
	s.Allow(newSessionAuth(o.Auth, sessionTLS(o.CertsDir)))
	if len(o.Secrets) > 0 {
		m := make(map[string][]byte, len(o.Secrets))
		for _, sec := range o.Secrets {
			m[sec.ID] = sec.Value
		}
		s.Allow(secretsprovider.FromMap(m))
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() {
		done <- s.Run(sctx, func(ctx context.Context, proto string, meta map[string][]string) (net.Conn, error) {
			return cli.DialHijack(ctx, "/session", proto, meta)
		})
	}()
	stop = func() {
		t := time.Now()
		s.Close()
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			log.Debugf("buildkit session: %v", err)
		}
		if ctx.Err() != nil {
			log.Debugf("BuildKit session closed in %s", time.Since(t).Round(time.Millisecond))
		}
	}
	return s.ID(), stop, nil
}

// randomHex is 16 random bytes in hex: a session's shared key, a build's ID.
func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails since Go 1.24
	return hex.EncodeToString(b)
}

// sessionAuth answers BuildKit's credential requests from RegistryAuth through
// BuildKit's own provider (which also fetches bearer tokens client-side), but
// declines client-side token signing: that would write a seed file under
// ~/.docker, and the daemon falls back to plain tokens without it.
type sessionAuth struct {
	auth.UnimplementedAuthServer
	inner auth.AuthServer
}

func newSessionAuth(a RegistryAuth, tlsConfigs map[string]*authprovider.AuthTLSConfig) *sessionAuth {
	cf := configfile.New("")
	for key, c := range a.byKey {
		cf.AuthConfigs[key] = clitypes.AuthConfig{Username: c.Username, Password: c.Password, ServerAddress: key}
	}
	inner := authprovider.NewDockerAuthProvider(authprovider.DockerAuthProviderConfig{ConfigFile: cf, TLSConfigs: tlsConfigs})
	return &sessionAuth{inner: inner.(auth.AuthServer)}
}

func (a *sessionAuth) Register(s *grpc.Server) { auth.RegisterAuthServer(s, a) }

func (a *sessionAuth) Credentials(ctx context.Context, req *auth.CredentialsRequest) (*auth.CredentialsResponse, error) {
	return a.inner.Credentials(ctx, req)
}

func (a *sessionAuth) FetchToken(ctx context.Context, req *auth.FetchTokenRequest) (*auth.FetchTokenResponse, error) {
	return a.inner.FetchToken(ctx, req)
}

func (a *sessionAuth) GetTokenAuthority(context.Context, *auth.GetTokenAuthorityRequest) (*auth.GetTokenAuthorityResponse, error) {
	return nil, status.Error(codes.Unavailable, "client-side token authority disabled")
}

func (a *sessionAuth) VerifyTokenAuthority(context.Context, *auth.VerifyTokenAuthorityRequest) (*auth.VerifyTokenAuthorityResponse, error) {
	return nil, status.Error(codes.Unavailable, "client-side token authority disabled")
}

// buildKitImageID reads the image ID from a moby.image.id aux payload.
func buildKitImageID(aux json.RawMessage) string {
	var r build.Result
	if json.Unmarshal(aux, &r) == nil && strings.HasPrefix(r.ID, "sha256:") {
		return r.ID
	}
	return ""
}

// sessionTLS reads a certs.d folder into the session's per-host TLS
// settings, so token requests trust the same CAs and present the same
// client certificates as dockerd does.
func sessionTLS(certsDir string) map[string]*authprovider.AuthTLSConfig {
	if certsDir == "" {
		return nil
	}
	hosts, err := os.ReadDir(certsDir)
	if err != nil {
		return nil
	}
	out := map[string]*authprovider.AuthTLSConfig{}
	for _, h := range hosts {
		if !h.IsDir() {
			continue
		}
		dir := filepath.Join(certsDir, h.Name())
		files, _ := os.ReadDir(dir)
		c := &authprovider.AuthTLSConfig{}
		for _, f := range files {
			p := filepath.Join(dir, f.Name())
			switch {
			case strings.HasSuffix(f.Name(), ".crt"):
				c.RootCAs = append(c.RootCAs, p)
			case strings.HasSuffix(f.Name(), ".cert"):
				key := strings.TrimSuffix(p, ".cert") + ".key"
				if _, err := os.Stat(key); err == nil {
					c.KeyPairs = append(c.KeyPairs, authprovider.TLSKeyPair{Certificate: p, Key: key})
				}
			}
		}
		out[h.Name()] = c
	}
	return out
}
