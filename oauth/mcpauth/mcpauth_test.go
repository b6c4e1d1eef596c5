package mcpauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/oauth"
	"github.com/tokenbroker/tokenbroker/oauth/mcpauth"
)

// site is one loopback server playing an MCP server's and an authorization
// server's HTTP surface, with knobs for the variants the specification
// allows and the mistakes a client must refuse.
type site struct {
	srv *httptest.Server
	// challenge: the 401 names resource_metadata.
	challenge bool
	// challengeScope is the scope of the 401's challenge.
	challengeScope string
	// prmAtRoot serves the metadata only at the root well-known URI.
	prmAtRoot bool
	resource  string // default: the MCP URL
	issuer    string // what the AS metadata says; default: the issuer URL
	noS256    bool
	asScopes  []string
	oidcOnly  bool
	hits      []string
	regs      []map[string]any
}

func newSite(t *testing.T, configure func(*site)) *site {
	s := &site{}
	configure(s)
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *site) mcpURL() string    { return s.srv.URL + "/mcp" }
func (s *site) issuerURL() string { return s.srv.URL + "/as" }

func (s *site) serve(w http.ResponseWriter, r *http.Request) {
	s.hits = append(s.hits, r.Method+" "+r.URL.Path)
	writeJSON := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	prm := func() {
		res := s.resource
		if res == "" {
			res = s.mcpURL()
		}
		writeJSON(map[string]any{"resource": res, "authorization_servers": []string{s.issuerURL()},
			"scopes_supported": []string{"tools:read", "tools:call"}})
	}
	asMetadata := func() {
		iss := s.issuer
		if iss == "" {
			iss = s.issuerURL()
		}
		methods := []string{"S256"}
		if s.noS256 {
			methods = []string{"plain"}
		}
		writeJSON(map[string]any{
			"issuer":                           iss,
			"authorization_endpoint":           s.srv.URL + "/as/authorize",
			"token_endpoint":                   s.srv.URL + "/as/token",
			"registration_endpoint":            s.srv.URL + "/as/register",
			"code_challenge_methods_supported": methods,
			"scopes_supported":                 s.asScopes,
		})
	}
	switch r.URL.Path {
	case "/mcp":
		h := `Bearer error="invalid_request"`
		if s.challenge {
			h = fmt.Sprintf(`Bearer resource_metadata="%s/custom/prm"`, s.srv.URL)
		}
		if s.challengeScope != "" {
			h += `, scope="` + s.challengeScope + `"`
		}
		w.Header().Set("WWW-Authenticate", h)
		w.WriteHeader(http.StatusUnauthorized)
	case "/custom/prm":
		if s.challenge {
			prm()
			return
		}
		http.NotFound(w, r)
	case "/.well-known/oauth-protected-resource/mcp":
		if s.challenge || s.prmAtRoot {
			http.NotFound(w, r)
			return
		}
		prm()
	case "/.well-known/oauth-protected-resource":
		if s.prmAtRoot {
			prm()
			return
		}
		http.NotFound(w, r)
	case "/.well-known/oauth-authorization-server/as":
		if s.oidcOnly {
			http.NotFound(w, r)
			return
		}
		asMetadata()
	case "/.well-known/openid-configuration/as":
		asMetadata()
	case "/as/register":
		var m map[string]any
		_ = json.NewDecoder(r.Body).Decode(&m)
		s.regs = append(s.regs, m)
		w.WriteHeader(http.StatusCreated)
		writeJSON(map[string]any{"client_id": "dyn-1", "client_secret": "s3cret",
			"token_endpoint_auth_method": m["token_endpoint_auth_method"], "client_secret_expires_at": 0})
	default:
		http.NotFound(w, r)
	}
}

var loopback = mcpauth.Options{Policy: mcpauth.HostPolicy{AllowPrivate: true}}

func TestDiscoverVariants(t *testing.T) {
	for _, tc := range []struct {
		name      string
		configure func(*site)
		wantPRM   string
	}{
		{"challenge names resource_metadata", func(s *site) { s.challenge = true }, "/custom/prm"},
		{"path-specific well-known", func(s *site) {}, "/.well-known/oauth-protected-resource/mcp"},
		{"root well-known", func(s *site) { s.prmAtRoot = true }, "/.well-known/oauth-protected-resource"},
		{"resource is the origin", func(s *site) { s.prmAtRoot = true; s.resource = "ROOT" }, "/.well-known/oauth-protected-resource"},
		{"OpenID Connect path insertion", func(s *site) { s.oidcOnly = true }, "/.well-known/oauth-protected-resource/mcp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSite(t, tc.configure)
			if s.resource == "ROOT" {
				s.resource = s.srv.URL
			}
			d, err := mcpauth.Discover(context.Background(), loopback, s.mcpURL())
			if err != nil {
				t.Fatal(err)
			}
			if d.ResourceMetadataURL != s.srv.URL+tc.wantPRM {
				t.Errorf("metadata from %s, want %s", d.ResourceMetadataURL, s.srv.URL+tc.wantPRM)
			}
			want := s.mcpURL()
			if s.resource != "" {
				want = s.resource
			}
			if d.Resource != want {
				t.Errorf("resource %q, want %q", d.Resource, want)
			}
			if d.Issuer != s.issuerURL() || d.Metadata.TokenEndpoint != s.srv.URL+"/as/token" {
				t.Errorf("issuer %q token endpoint %q", d.Issuer, d.Metadata.TokenEndpoint)
			}
		})
	}
}

func TestDiscoverRefuses(t *testing.T) {
	for _, tc := range []struct {
		name      string
		configure func(*site)
		want      error
	}{
		{"issuer mismatch", func(s *site) { s.issuer = "https://evil.example/as" }, mcpauth.ErrIssuerMismatch},
		{"no PKCE S256", func(s *site) { s.noS256 = true }, mcpauth.ErrPKCEUnsupported},
		{"resource of another server", func(s *site) { s.resource = "https://other.example/mcp" }, mcpauth.ErrResourceMismatch},
		{"resource of a sibling path", func(s *site) { s.resource = "SIBLING" }, mcpauth.ErrResourceMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSite(t, tc.configure)
			if s.resource == "SIBLING" {
				s.resource = s.srv.URL + "/mcp-other"
			}
			_, err := mcpauth.Discover(context.Background(), loopback, s.mcpURL())
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestDiscoverIssuerMismatchIsAnOAuthError(t *testing.T) {
	s := newSite(t, func(s *site) {})
	s.issuer = s.issuerURL() + "/"
	_, err := mcpauth.Discover(context.Background(), loopback, s.mcpURL())
	var oe *oauth.Error
	if !errors.As(err, &oe) || oe.Code != oauth.CodeIssuerMismatch {
		t.Fatalf("err = %v, want an oauth.Error with %s", err, oauth.CodeIssuerMismatch)
	}
}

func TestHostPolicyRefusesLoopbackByDefault(t *testing.T) {
	s := newSite(t, func(s *site) {})
	_, err := mcpauth.Discover(context.Background(), mcpauth.Options{}, s.mcpURL())
	if !errors.Is(err, mcpauth.ErrHostRefused) {
		t.Fatalf("err = %v, want ErrHostRefused", err)
	}
	if len(s.hits) != 0 {
		t.Errorf("the server was reached: %v", s.hits)
	}
	// A name is checked on the address it resolves to, at connect time.
	client := mcpauth.NewHTTPClient(mcpauth.HostPolicy{}, 0, nil)
	_, err = client.Get(strings.Replace(s.srv.URL, "http://127.0.0.1", "https://localhost", 1))
	if !errors.Is(err, mcpauth.ErrHostRefused) {
		t.Fatalf("GET localhost: err = %v, want ErrHostRefused", err)
	}
}

func TestCheckURL(t *testing.T) {
	private := mcpauth.HostPolicy{AllowPrivate: true}
	for _, tc := range []struct {
		policy mcpauth.HostPolicy
		url    string
		ok     bool
	}{
		{mcpauth.HostPolicy{}, "https://mcp.example/mcp", true},
		{mcpauth.HostPolicy{}, "http://mcp.example/mcp", false},
		{mcpauth.HostPolicy{}, "https://10.0.0.1/mcp", false},
		{mcpauth.HostPolicy{}, "https://[::1]/mcp", false},
		{mcpauth.HostPolicy{}, "https://169.254.169.254/latest", false},
		{private, "http://127.0.0.1:8080/mcp", true},
		{private, "http://localhost:8080/mcp", true},
		{private, "http://10.0.0.1/mcp", false},
		{private, "https://10.0.0.1/mcp", true},
		{private, "ftp://127.0.0.1/x", false},
		{private, "https://user:pw@mcp.example/", false},
		{private, "/relative", false},
	} {
		_, err := tc.policy.CheckURL(tc.url)
		if (err == nil) != tc.ok {
			t.Errorf("CheckURL(%q) with %+v: err = %v, want ok=%v", tc.url, tc.policy, err, tc.ok)
		}
	}
}

func TestRedirectToAnotherHostRefused(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the other host was reached")
	}))
	defer other.Close()
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/x", http.StatusFound)
	}))
	defer src.Close()
	client := mcpauth.NewHTTPClient(mcpauth.HostPolicy{AllowPrivate: true}, 0, nil)
	resp, err := client.Get(src.URL)
	if err == nil {
		resp.Body.Close()
		t.Fatal("redirect to another host followed")
	}
}

func TestOversizedMetadataRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/mcp" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"resource":"` + strings.Repeat("a", mcpauth.MaxDocument) + `"}`))
	}))
	defer srv.Close()
	_, err := mcpauth.Discover(context.Background(), loopback, srv.URL+"/mcp")
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v, want a size error", err)
	}
}

func TestNoAuthorizationRequired(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/mcp" {
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	_, err := mcpauth.Discover(context.Background(), loopback, srv.URL+"/mcp")
	if !errors.Is(err, mcpauth.ErrNoAuthorization) {
		t.Fatalf("err = %v, want ErrNoAuthorization", err)
	}
}

func TestScopeSelection(t *testing.T) {
	for _, tc := range []struct {
		name      string
		configure func(*site)
		want      []string
	}{
		{"from the resource metadata", func(s *site) {}, []string{"tools:read", "tools:call"}},
		{"from the challenge", func(s *site) { s.challenge, s.challengeScope = true, "tools:read" }, []string{"tools:read"}},
		{"offline_access when listed", func(s *site) { s.asScopes = []string{"tools:read", "offline_access"} },
			[]string{"tools:read", "tools:call", "offline_access"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSite(t, tc.configure)
			d, err := mcpauth.Discover(context.Background(), loopback, s.mcpURL())
			if err != nil {
				t.Fatal(err)
			}
			if got := d.Scopes(d.Challenge); !slices.Equal(got, tc.want) {
				t.Errorf("scopes %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRegister(t *testing.T) {
	s := newSite(t, func(s *site) {})
	d, err := mcpauth.Discover(context.Background(), loopback, s.mcpURL())
	if err != nil {
		t.Fatal(err)
	}
	reg, err := mcpauth.Register(context.Background(), loopback, d.Metadata, mcpauth.ClientMetadata{
		RedirectURIs: []string{"http://127.0.0.1:9/callback"}, ClientName: "tokenbroker"})
	if err != nil {
		t.Fatal(err)
	}
	if reg.ClientID != "dyn-1" || reg.ClientSecret != "s3cret" || reg.TokenEndpointAuthMethod != "client_secret_basic" {
		t.Errorf("registration %v", reg)
	}
	if strings.Contains(reg.String(), "s3cret") {
		t.Error("String shows the secret")
	}
	m := s.regs[0]
	if fmt.Sprint(m["grant_types"]) != "[authorization_code refresh_token]" || fmt.Sprint(m["response_types"]) != "[code]" {
		t.Errorf("registration request %v", m)
	}
	cfg := d.EndpointConfig(reg)
	if cfg.TokenParams.Get("resource") != s.mcpURL() || cfg.TokenURL != s.srv.URL+"/as/token" {
		t.Errorf("endpoint config %+v", cfg)
	}
}

func TestParseChallenges(t *testing.T) {
	cs := mcpauth.ParseChallenges([]string{
		`Basic realm="x", Bearer error="insufficient_scope", scope="a b", resource_metadata="https://m.example/.well-known/oauth-protected-resource", error_description="need \"b\""`,
		`Bearer`,
	})
	if len(cs) != 3 {
		t.Fatalf("%d challenges: %+v", len(cs), cs)
	}
	b := cs[1]
	if b.Scheme != "Bearer" || b.Params["error"] != "insufficient_scope" || !slices.Equal(b.Scopes(), []string{"a", "b"}) ||
		b.Params["error_description"] != `need "b"` || b.Params["resource_metadata"] == "" {
		t.Errorf("bearer challenge %+v", b)
	}
	if cs[0].Params["realm"] != "x" || cs[2].Scheme != "Bearer" {
		t.Errorf("challenges %+v", cs)
	}
	h := http.Header{}
	h.Add("WWW-Authenticate", `Bearer error=invalid_token`)
	c, ok := mcpauth.BearerChallenge(h)
	if !ok || c.Params["error"] != "invalid_token" {
		t.Errorf("token68-less unquoted param: %+v", c)
	}
}
