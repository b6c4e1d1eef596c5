package authztest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// IssueTokens runs the authorization code grant with PKCE S256 over HTTP, as
// a client would (RFC 6749 §4.1, RFC 7636): it asks the authorization
// endpoint for a code for scopes, takes it from the redirect and exchanges it
// at the token endpoint. It returns a real, refreshable grant to seed a test
// with, and fails the test if any step fails.
//
// The exchange is a token-endpoint request like any other: it counts in
// TokenCalls and meets FailNext and TokenDelay, so seed before arming them.
func (s *Server) IssueTokens(t testing.TB, scopes ...string) (access, refresh string, expiresIn time.Duration) {
	t.Helper()
	tok, err := s.issue(t.Context(), scopes)
	if err != nil {
		t.Fatalf("authztest: IssueTokens: %v", err)
	}
	return tok.AccessToken, tok.RefreshToken, time.Duration(tok.ExpiresIn) * time.Second
}

// tokenResponse is the part of a token-endpoint answer the helpers read
// (RFC 6749 §5.1, §5.2).
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	Error        string `json:"error"`
}

func (s *Server) issue(ctx context.Context, scopes []string) (*tokenResponse, error) {
	verifier := randomToken()
	sum := sha256.Sum256([]byte(verifier))
	state := randomToken()

	q := url.Values{
		"response_type":         {"code"},
		"client_id":             {s.clientID},
		"redirect_uri":          {s.RedirectURI()},
		"state":                 {state},
		"code_challenge":        {base64.RawURLEncoding.EncodeToString(sum[:])},
		"code_challenge_method": {"S256"},
	}
	if len(scopes) > 0 {
		q.Set("scope", strings.Join(scopes, " "))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.AuthorizeURL()+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	noFollow := &http.Client{
		Transport:     s.ts.Client().Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := noFollow.Do(req)
	if err != nil {
		return nil, fmt.Errorf("authorization request: %w", err)
	}
	drain(resp)
	loc, err := resp.Location()
	if err != nil {
		return nil, fmt.Errorf("authorization endpoint answered %d without a redirect", resp.StatusCode)
	}
	got := loc.Query()
	if e := got.Get("error"); e != "" {
		return nil, fmt.Errorf("authorization endpoint refused: %s", e)
	}
	if got.Get("state") != state {
		return nil, errors.New("authorization endpoint returned a different state")
	}
	code := got.Get("code")
	if code == "" {
		return nil, errors.New("authorization endpoint redirected without a code")
	}

	form := url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {code},
		"redirect_uri":  {s.RedirectURI()},
		"code_verifier": {verifier},
	}
	status, body, err := s.post(ctx, s.TokenURL(), form)
	if err != nil {
		return nil, fmt.Errorf("token request: %w", err)
	}
	var tok tokenResponse
	if err := json.Unmarshal(body, &tok); err != nil {
		return nil, fmt.Errorf("token endpoint answered %d with a body that is not JSON", status)
	}
	switch {
	case status != http.StatusOK:
		return nil, fmt.Errorf("token endpoint answered %d, error %q", status, tok.Error)
	case tok.AccessToken == "":
		return nil, errors.New("token endpoint answered without access_token")
	case tok.RefreshToken == "":
		return nil, errors.New("token endpoint answered without refresh_token")
	}
	return &tok, nil
}

// Active reports whether the server considers token, an access or refresh
// token, active, by asking its own introspection endpoint (RFC 7662 §2.2).
// It fails the test if introspection itself fails.
func (s *Server) Active(t testing.TB, token string) bool {
	t.Helper()
	status, body, err := s.post(t.Context(), s.IntrospectionURL(), url.Values{"token": {token}})
	if err != nil {
		t.Fatalf("authztest: Active: introspection request: %v", err)
	}
	var ans struct {
		Active *bool `json:"active"`
	}
	if status != http.StatusOK || json.Unmarshal(body, &ans) != nil || ans.Active == nil {
		t.Fatalf("authztest: Active: introspection answered %d without an \"active\" member", status)
	}
	return *ans.Active
}

// Revoke revokes token, an access or refresh token, at the revocation
// endpoint (RFC 7009 §2.1). Revoking either token of a grant revokes every
// token of that grant. It fails the test if the endpoint does not answer 200.
func (s *Server) Revoke(t testing.TB, token string) {
	t.Helper()
	status, _, err := s.post(t.Context(), s.RevocationURL(), url.Values{"token": {token}})
	if err != nil {
		t.Fatalf("authztest: Revoke: %v", err)
	}
	if status != http.StatusOK {
		t.Fatalf("authztest: Revoke: revocation endpoint answered %d", status)
	}
}

// post sends form to endpoint authenticated as the client, by the method
// the token endpoint accepts, and returns the answer.
func (s *Server) post(ctx context.Context, endpoint string, form url.Values) (int, []byte, error) {
	form = cloneValues(form)
	if s.opts.TokenEndpointAuthMethod == AuthMethodPost {
		form.Set("client_id", s.clientID)
		form.Set("client_secret", s.clientSecret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if s.opts.TokenEndpointAuthMethod != AuthMethodPost {
		// RFC 6749 §2.3.1: form-encode before Basic.
		req.SetBasicAuth(url.QueryEscape(s.clientID), url.QueryEscape(s.clientSecret))
	}
	resp, err := s.ts.Client().Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("reading the answer: %w", err)
	}
	return resp.StatusCode, body, nil
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v)+2)
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
}

// randomToken returns 256 random bits, base64url-encoded: 43 characters, a
// valid PKCE code verifier (RFC 7636 §4.1) and a good state.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}
