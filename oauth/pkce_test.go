package oauth

import (
	"net/url"
	"strings"
	"testing"
)

func TestS256ChallengeRFC7636Vector(t *testing.T) {
	// RFC 7636 Appendix B.
	const (
		verifier  = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
		challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
	)
	if got := S256Challenge(verifier); got != challenge {
		t.Errorf("S256Challenge = %q, want %q", got, challenge)
	}
}

// unreserved is RFC 7636 §4.1's alphabet for code verifiers.
func unreserved(s string) bool {
	for _, c := range s {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.ContainsRune("-._~", c)) {
			return false
		}
	}
	return true
}

func TestNewPKCE(t *testing.T) {
	v1, c1, err := NewPKCE()
	if err != nil {
		t.Fatal(err)
	}
	v2, _, err := NewPKCE()
	if err != nil {
		t.Fatal(err)
	}
	if len(v1) < 43 || len(v1) > 128 || !unreserved(v1) {
		t.Errorf("verifier has length %d / unreserved alphabet %v; RFC 7636 §4.1 wants 43-128 unreserved characters",
			len(v1), unreserved(v1))
	}
	if c1 != S256Challenge(v1) {
		t.Error("challenge is not the S256 challenge of the verifier")
	}
	if v1 == v2 {
		t.Error("two verifiers are equal")
	}
}

func TestNewState(t *testing.T) {
	s1, err := NewState()
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := NewState()
	if len(s1) < 43 || !unreserved(s1) || s1 == s2 {
		t.Errorf("state length %d, url-safe %v, distinct %v", len(s1), unreserved(s1), s1 != s2)
	}
}

func TestEndpointAuthCodeURL(t *testing.T) {
	e, _ := newTestEndpoint(t, Config{
		TokenURL:     "https://as.example.test/token",
		AuthorizeURL: "https://as.example.test/authorize?tenant=t1",
	})
	const challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
	raw, err := e.AuthCodeURL(t.Context(), "fake-state", "https://app.example.test/cb", challenge,
		[]string{"openid", "offline_access"}, url.Values{"access_type": {"offline"}})
	if err != nil {
		t.Fatalf("AuthCodeURL: %v", err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "https" || u.Host != "as.example.test" || u.Path != "/authorize" {
		t.Errorf("URL %s is not at the authorization endpoint", raw)
	}
	q := u.Query()
	want := map[string]string{
		"response_type":         "code",
		"client_id":             epClientID,
		"redirect_uri":          "https://app.example.test/cb",
		"scope":                 "openid offline_access",
		"state":                 "fake-state",
		"code_challenge":        challenge,
		"code_challenge_method": "S256",
		"access_type":           "offline",
		"tenant":                "t1",
	}
	for k, v := range want {
		if q.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, q.Get(k), v)
		}
	}
	if len(q) != len(want) {
		t.Errorf("query has %d parameters, want %d: %v", len(q), len(want), q)
	}
}

func TestEndpointAuthCodeURLBadInput(t *testing.T) {
	e, _ := newTestEndpoint(t, Config{TokenURL: "https://as.example.test/token", AuthorizeURL: "https://as.example.test/authorize"})
	tests := []struct {
		name, state, challenge string
		extra                  url.Values
		wantErr                string
	}{
		{"no state", "", "c", nil, "state"},
		{"no challenge", "s", "", nil, "challenge"},
		{"extra overrides state", "s", "c", url.Values{"state": {"x"}}, `"state"`},
		{"extra overrides method", "s", "c", url.Values{"code_challenge_method": {"plain"}}, "code_challenge_method"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.AuthCodeURL(t.Context(), tt.state, "", tt.challenge, nil, tt.extra)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want one naming %s", err, tt.wantErr)
			}
		})
	}

	noAuth, _ := newTestEndpoint(t, Config{TokenURL: "https://as.example.test/token"})
	if _, err := noAuth.AuthCodeURL(t.Context(), "s", "", "c", nil, nil); err == nil {
		t.Error("AuthCodeURL without an authorization endpoint succeeded")
	}
}
