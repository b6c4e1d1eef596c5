package demo

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

const secret = "sandbox-test-secret"

type env struct {
	t    *testing.T
	srv  *httptest.Server
	base string
}

func newEnv(t *testing.T) *env {
	srv := httptest.NewUnstartedServer(nil)
	srv.Start()
	base := srv.URL + "/demo"
	sb := New(Options{BaseURL: base, ClientSecret: secret})
	srv.Config.Handler = sb.Handler("/demo")
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, base: base}
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// authorize runs the consent step and returns the code (or the error the
// redirect carried).
func (e *env) authorize(verifier, decision string) url.Values {
	e.t.Helper()
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{"response_type": {"code"}, "client_id": {ClientID}, "redirect_uri": {"http://127.0.0.1:9/cb"},
		"state": {"st"}, "code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}, "scope": {"profile"}}
	resp, err := http.Get(e.base + AuthorizePath + "?" + q.Encode())
	if err != nil {
		e.t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="consent" value="([^"]+)"`).FindSubmatch(page)
	if m == nil || !strings.Contains(string(page), "Not a real account") {
		e.t.Fatalf("no labelled consent page: %s", page)
	}
	resp, err = noRedirect.PostForm(e.base+AuthorizePath, url.Values{"consent": {string(m[1])}, "user": {"alice"}, "decision": {decision}})
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || loc.Query().Get("state") != "st" {
		e.t.Fatalf("consent answered %d to %s", resp.StatusCode, loc)
	}
	return loc.Query()
}

func (e *env) token(form url.Values) (int, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.base+TokenPath, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(ClientID, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (e *env) api(tok string) int {
	req, _ := http.NewRequest("GET", e.base+APIPath+"/me", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestSandboxFollowsTheSpecs(t *testing.T) {
	e := newEnv(t)
	if q := e.authorize("v1-verifier-long-enough-0123456789abcdef", "deny"); q.Get("error") != "access_denied" {
		t.Errorf("deny: %v", q)
	}
	q := e.authorize("v1-verifier-long-enough-0123456789abcdef", "allow")
	code := q.Get("code")
	exchange := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {"http://127.0.0.1:9/cb"}, "code_verifier": {"wrong"}}
	if st, out := e.token(exchange); st != 400 || out["error"] != "invalid_grant" {
		t.Errorf("wrong PKCE verifier: %d %v", st, out)
	}
	// The failed attempt spent the code (single use).
	q = e.authorize("v2-verifier-long-enough-0123456789abcdef", "allow")
	exchange.Set("code", q.Get("code"))
	exchange.Set("code_verifier", "v2-verifier-long-enough-0123456789abcdef")
	st, out := e.token(exchange)
	if st != 200 || out["token_type"] != "Bearer" || out["expires_in"] != float64(120) {
		t.Fatalf("code exchange: %d %v", st, out)
	}
	if st, _ := e.token(exchange); st != 400 {
		t.Errorf("a code used twice: %d", st)
	}
	at1, rt1 := out["access_token"].(string), out["refresh_token"].(string)
	if e.api(at1) != 200 || e.api("nope") != 401 {
		t.Error("API does not tell valid from unknown tokens")
	}
	st, out = e.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt1}})
	rt2, _ := out["refresh_token"].(string)
	if st != 200 || rt2 == "" || rt2 == rt1 {
		t.Fatalf("refresh: %d, rotated %v", st, rt2 != rt1)
	}
	// Replaying the spent refresh token revokes the grant: the new one dies too.
	if st, out := e.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt1}}); st != 400 || out["error"] != "invalid_grant" {
		t.Errorf("replayed refresh token: %d %v", st, out)
	}
	if st, _ := e.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt2}}); st != 400 {
		t.Errorf("the grant survived a replayed refresh token: %d", st)
	}
	// Wrong client secret.
	req, _ := http.NewRequest("POST", e.base+TokenPath, strings.NewReader("grant_type=refresh_token&refresh_token=x"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(ClientID, "wrong")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("wrong client secret: %d", resp.StatusCode)
	}
}

func TestSandboxRevokeGrants(t *testing.T) {
	e := newEnv(t)
	q := e.authorize("verifier-long-enough-0123456789abcdefghij", "allow")
	_, out := e.token(url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")}, "redirect_uri": {"http://127.0.0.1:9/cb"}, "code_verifier": {"verifier-long-enough-0123456789abcdefghij"}})
	resp, err := http.Post(e.base+GrantsPath+"/revoke", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(body)) != `{"revoked":1}` {
		t.Errorf("revoke: %s", body)
	}
	if e.api(out["access_token"].(string)) != 401 {
		t.Error("a revoked grant's access token still works")
	}
	if st, o := e.token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {out["refresh_token"].(string)}}); st != 400 || o["error"] != "invalid_grant" {
		t.Errorf("refresh of a revoked grant: %d %v", st, o)
	}
}

func TestSandboxAnswersLoopbackOnly(t *testing.T) {
	sb := New(Options{BaseURL: "http://127.0.0.1:1/demo", ClientSecret: secret})
	r := httptest.NewRequest("GET", "/demo/", nil)
	r.RemoteAddr = "192.0.2.7:5555"
	w := httptest.NewRecorder()
	sb.Handler("/demo").ServeHTTP(w, r)
	if w.Code != http.StatusForbidden {
		t.Errorf("a non-loopback client got %d", w.Code)
	}
}
