package oauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

const (
	wellKnown8414 = "/.well-known/oauth-authorization-server"
	wellKnownOIDC = "/.well-known/openid-configuration"
)

// metadataJSON is a metadata document for issuer whose endpoints live on base.
func metadataJSON(issuer, base string) string {
	return fmt.Sprintf(`{
		"issuer": %q,
		"authorization_endpoint": %q,
		"token_endpoint": %q,
		"introspection_endpoint": %q,
		"revocation_endpoint": %q,
		"scopes_supported": ["openid", "offline_access"],
		"token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
		"code_challenge_methods_supported": "S256"
	}`, issuer, base+"/authorize", base+"/token", base+"/introspect", base+"/revoke")
}

// docServer serves metadata documents by path; docs receives the server's
// base URL so documents can name it. Other paths are 404.
func docServer(t *testing.T, docs func(base string) map[string]epReply) *epProvider {
	t.Helper()
	var p *epProvider
	p = newEPProvider(t, func(_ int, r epRequest) epReply {
		if rep, ok := docs(p.srv.URL)[r.Path]; ok {
			return rep
		}
		if r.Path == "/token" {
			return epJSON(200, epTokenBody)
		}
		return epReply{Status: 404, Body: "not found"}
	})
	return p
}

func paths(reqs []epRequest) []string {
	var ps []string
	for _, r := range reqs {
		ps = append(ps, r.Method+" "+r.Path)
	}
	return ps
}

func TestDiscoveryRFC8414(t *testing.T) {
	p := docServer(t, func(base string) map[string]epReply {
		return map[string]epReply{wellKnown8414: epJSON(200, metadataJSON(base, base))}
	})
	md, err := NewDiscoveryCache(time.Hour).Get(t.Context(), nil, p.srv.URL)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if md.Issuer != p.srv.URL || md.TokenEndpoint != p.url("/token") || md.RevocationEndpoint != p.url("/revoke") ||
		md.IntrospectionEndpoint != p.url("/introspect") || md.AuthorizationEndpoint != p.url("/authorize") {
		t.Errorf("metadata = %+v", md)
	}
	if len(md.ScopesSupported) != 2 || len(md.CodeChallengeMethodsSupported) != 1 || md.CodeChallengeMethodsSupported[0] != "S256" {
		t.Errorf("supported lists = %v / %v", md.ScopesSupported, md.CodeChallengeMethodsSupported)
	}
	reqs := p.requests()
	if got := paths(reqs); len(got) != 1 || got[0] != "GET "+wellKnown8414 {
		t.Errorf("requests = %v, want only the RFC 8414 document", got)
	}
	if a := reqs[0].Header.Get("Accept"); a != "application/json" {
		t.Errorf("Accept = %q", a)
	}
}

func TestDiscoveryFallsBackToOIDC(t *testing.T) {
	tests := []struct {
		name   string
		answer epReply // the RFC 8414 URL's answer
	}{
		{"404", epReply{Status: 404}},
		{"403", epReply{Status: 403}},
		{"HTML page with 200", epReply{Status: 200, Header: map[string]string{"Content-Type": "text/html"}, Body: "<html>app</html>"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := docServer(t, func(base string) map[string]epReply {
				return map[string]epReply{
					wellKnown8414: tt.answer,
					wellKnownOIDC: epJSON(200, metadataJSON(base, base)),
				}
			})
			md, err := NewDiscoveryCache(time.Hour).Get(t.Context(), nil, p.srv.URL)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if md.TokenEndpoint != p.url("/token") {
				t.Errorf("TokenEndpoint = %q", md.TokenEndpoint)
			}
			want := []string{"GET " + wellKnown8414, "GET " + wellKnownOIDC}
			if got := paths(p.requests()); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("requests = %v, want %v", got, want)
			}
		})
	}
}

func TestDiscoveryServerTroubleDoesNotFallBack(t *testing.T) {
	p := docServer(t, func(base string) map[string]epReply {
		return map[string]epReply{
			wellKnown8414: {Status: 503},
			wellKnownOIDC: epJSON(200, metadataJSON(base, base)),
		}
	})
	_, err := NewDiscoveryCache(time.Hour).Get(t.Context(), nil, p.srv.URL)
	if oe := asError(t, err); oe.StatusCode != 503 || oe.Op != "discovery" || !errors.Is(err, ErrTransient) {
		t.Errorf("err = %v, want transient discovery failure with status 503", err)
	}
	if n := len(p.requests()); n != 1 {
		t.Errorf("provider saw %d requests, want 1", n)
	}
}

func TestDiscoveryIssuerMismatchRejected(t *testing.T) {
	p := docServer(t, func(base string) map[string]epReply {
		return map[string]epReply{
			wellKnown8414: epJSON(200, metadataJSON("https://impostor.example.test", base)),
			wellKnownOIDC: epJSON(200, metadataJSON(base, base)),
		}
	})
	md, err := NewDiscoveryCache(time.Hour).Get(t.Context(), nil, p.srv.URL)
	if md != nil {
		t.Error("metadata returned despite the issuer mismatch")
	}
	if oe := asError(t, err); oe.Code != CodeIssuerMismatch || !Terminal(err) {
		t.Errorf("err = %v, want terminal %s", err, CodeIssuerMismatch)
	}
	if n := len(p.requests()); n != 1 {
		t.Errorf("provider saw %d requests; a mismatch must not be papered over by the OIDC document", n)
	}
}

func TestDiscoveryTrailingSlashIsADifferentIssuer(t *testing.T) {
	p := docServer(t, func(base string) map[string]epReply {
		return map[string]epReply{wellKnown8414: epJSON(200, metadataJSON(base, base))}
	})
	_, err := NewDiscoveryCache(time.Hour).Get(t.Context(), nil, p.srv.URL+"/")
	if oe := asError(t, err); oe.Code != CodeIssuerMismatch {
		t.Errorf("err = %v, want %s (RFC 8414 §3.3 compares exactly)", err, CodeIssuerMismatch)
	}
}

func TestDiscoveryPathInsertion(t *testing.T) {
	p := docServer(t, func(base string) map[string]epReply {
		return map[string]epReply{
			wellKnown8414 + "/tenants/acme": epJSON(200, metadataJSON(base+"/tenants/acme", base)),
		}
	})
	issuer := p.srv.URL + "/tenants/acme"
	md, err := NewDiscoveryCache(time.Hour).Get(t.Context(), nil, issuer)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if md.Issuer != issuer {
		t.Errorf("Issuer = %q", md.Issuer)
	}
	if got := paths(p.requests()); len(got) != 1 || got[0] != "GET "+wellKnown8414+"/tenants/acme" {
		t.Errorf("requests = %v, want the well-known suffix inserted before the path (RFC 8414 §3.1)", got)
	}
}

func TestDiscoveryURLs(t *testing.T) {
	tests := []struct{ issuer, rfc8414, oidc string }{
		{"https://as.example.test", "https://as.example.test/.well-known/oauth-authorization-server",
			"https://as.example.test/.well-known/openid-configuration"},
		{"https://as.example.test/", "https://as.example.test/.well-known/oauth-authorization-server",
			"https://as.example.test/.well-known/openid-configuration"},
		{"https://as.example.test/issuer1", "https://as.example.test/.well-known/oauth-authorization-server/issuer1",
			"https://as.example.test/issuer1/.well-known/openid-configuration"},
		{"https://as.example.test:8443/a/b/", "https://as.example.test:8443/.well-known/oauth-authorization-server/a/b",
			"https://as.example.test:8443/a/b/.well-known/openid-configuration"},
	}
	for _, tt := range tests {
		if got := rfc8414URL(tt.issuer); got != tt.rfc8414 {
			t.Errorf("rfc8414URL(%q) = %q, want %q", tt.issuer, got, tt.rfc8414)
		}
		if got := oidcDiscoveryURL(tt.issuer); got != tt.oidc {
			t.Errorf("oidcDiscoveryURL(%q) = %q, want %q", tt.issuer, got, tt.oidc)
		}
	}
}

func TestDiscoveryRejectsBadDocuments(t *testing.T) {
	tests := []struct {
		name string
		doc  func(base string) string
	}{
		{"relative token endpoint", func(base string) string {
			return fmt.Sprintf(`{"issuer":%q,"token_endpoint":"/token"}`, base)
		}},
		{"no issuer", func(base string) string { return `{"token_endpoint":"https://as.example.test/token"}` }},
		{"not JSON", func(string) string { return "<html></html>" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := docServer(t, func(base string) map[string]epReply {
				return map[string]epReply{
					wellKnown8414: epJSON(200, tt.doc(base)),
					wellKnownOIDC: epJSON(200, tt.doc(base)),
				}
			})
			md, err := NewDiscoveryCache(time.Hour).Get(t.Context(), nil, p.srv.URL)
			if md != nil || err == nil {
				t.Fatal("Get accepted a bad document")
			}
			if oe := asError(t, err); oe.Code != CodeInvalidResponse {
				t.Errorf("err = %v, want %s", err, CodeInvalidResponse)
			}
		})
	}
}

func TestDiscoveryCacheTTL(t *testing.T) {
	p := docServer(t, func(base string) map[string]epReply {
		return map[string]epReply{wellKnown8414: epJSON(200, metadataJSON(base, base))}
	})
	now := epNow
	cache := NewDiscoveryCache(time.Hour)
	cache.Now = func() time.Time { return now }

	first, err := cache.Get(t.Context(), nil, p.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	first.TokenEndpoint = "https://changed-by-caller.example.test/token"
	now = now.Add(59 * time.Minute)
	second, err := cache.Get(t.Context(), nil, p.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(p.requests()); n != 1 {
		t.Errorf("cache hit made a request: %d in total, want 1", n)
	}
	if second.TokenEndpoint != p.url("/token") {
		t.Error("a caller's change to its copy leaked into the cache")
	}
	now = now.Add(2 * time.Minute)
	if _, err := cache.Get(t.Context(), nil, p.srv.URL); err != nil {
		t.Fatal(err)
	}
	if n := len(p.requests()); n != 2 {
		t.Errorf("after TTL: %d requests in total, want 2", n)
	}
}

func TestDiscoveryCachesFailuresBriefly(t *testing.T) {
	p := docServer(t, func(string) map[string]epReply {
		return map[string]epReply{wellKnown8414: {Status: 500}}
	})
	now := epNow
	cache := NewDiscoveryCache(time.Hour)
	cache.Now = func() time.Time { return now }
	for range 3 {
		if _, err := cache.Get(t.Context(), nil, p.srv.URL); err == nil {
			t.Fatal("Get succeeded against a failing server")
		}
	}
	if n := len(p.requests()); n != 1 {
		t.Errorf("%d requests for three Gets within FailureTTL, want 1", n)
	}
	now = now.Add(DefaultDiscoveryFailureTTL)
	if _, err := cache.Get(t.Context(), nil, p.srv.URL); err == nil {
		t.Fatal("Get succeeded against a failing server")
	}
	if n := len(p.requests()); n != 2 {
		t.Errorf("after FailureTTL: %d requests in total, want 2", n)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestDiscoveryConcurrentGetsShareOneRequest runs in a synctest bubble so it
// can know that every caller is waiting before the one request is answered:
// the in-memory transport blocks until released, and synctest.Wait returns
// only once all goroutines are durably blocked.
func TestDiscoveryConcurrentGetsShareOneRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const issuer = "https://as.example.test"
		var calls atomic.Int32
		release := make(chan struct{})
		client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			calls.Add(1)
			<-release
			return &http.Response{
				StatusCode: 200,
				Header:     http.Header{"Content-Type": {"application/json"}},
				Body:       io.NopCloser(strings.NewReader(metadataJSON(issuer, issuer))),
				Request:    r,
			}, nil
		})}
		cache := NewDiscoveryCache(time.Hour)

		const callers = 8
		var wg sync.WaitGroup
		errs := make([]error, callers)
		tokenURLs := make([]string, callers)
		for i := range callers {
			wg.Go(func() {
				md, err := cache.Get(context.Background(), client, issuer)
				errs[i] = err
				if md != nil {
					tokenURLs[i] = md.TokenEndpoint
				}
			})
		}
		synctest.Wait()
		if n := calls.Load(); n != 1 {
			t.Errorf("%d requests in flight with %d callers waiting, want 1", n, callers)
		}
		close(release)
		wg.Wait()
		for i := range callers {
			if errs[i] != nil || tokenURLs[i] != issuer+"/token" {
				t.Errorf("caller %d: err = %v, token endpoint %q", i, errs[i], tokenURLs[i])
			}
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("%d requests in total, want 1", n)
		}
	})
}

func TestDiscoveryCallerGivingUpDoesNotFailOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const issuer = "https://as.example.test"
		release := make(chan struct{})
		client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			select { // like a real transport, give up when the request's context ends
			case <-release:
			case <-r.Context().Done():
				return nil, r.Context().Err()
			}
			return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(metadataJSON(issuer, issuer))), Request: r}, nil
		})}
		cache := NewDiscoveryCache(time.Hour)
		impatient, cancel := context.WithCancel(context.Background())
		var impatientErr, patientErr error
		var wg sync.WaitGroup
		wg.Go(func() { _, impatientErr = cache.Get(impatient, client, issuer) })
		synctest.Wait()
		wg.Go(func() { _, patientErr = cache.Get(context.Background(), client, issuer) })
		synctest.Wait()
		cancel()
		synctest.Wait()
		close(release)
		wg.Wait()
		if !errors.Is(impatientErr, context.Canceled) {
			t.Errorf("impatient caller: err = %v, want context.Canceled", impatientErr)
		}
		if patientErr != nil {
			t.Errorf("patient caller: err = %v; the shared fetch must not die with the first caller's context", patientErr)
		}
	})
}

func TestEndpointDiscoversTokenURL(t *testing.T) {
	p := docServer(t, func(base string) map[string]epReply {
		return map[string]epReply{wellKnown8414: epJSON(200, metadataJSON(base, base))}
	})
	e, _ := newTestEndpoint(t, Config{Issuer: p.srv.URL, AuthStyle: AuthStyleParams})
	for range 2 {
		tok, err := e.Refresh(t.Context(), epRefresh1)
		if err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		if tok.AccessToken != epAccess2 {
			t.Error("token not from the discovered token endpoint")
		}
	}
	want := []string{"GET " + wellKnown8414, "POST /token", "POST /token"}
	if got := paths(p.requests()); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("requests = %v, want %v (discovery once, then the token endpoint)", got, want)
	}
}

func TestEndpointExplicitURLWinsOverDiscovery(t *testing.T) {
	p := docServer(t, func(base string) map[string]epReply {
		return map[string]epReply{wellKnown8414: epJSON(200, metadataJSON(base, "https://elsewhere.example.test"))}
	})
	e, _ := newTestEndpoint(t, Config{Issuer: p.srv.URL, TokenURL: p.url("/token"), AuthStyle: AuthStyleParams})
	if _, err := e.Refresh(t.Context(), epRefresh1); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if got := paths(p.requests()); len(got) != 1 || got[0] != "POST /token" {
		t.Errorf("requests = %v, want only the explicit token endpoint", got)
	}
}
