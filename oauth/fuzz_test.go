package oauth

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// fuzzSeeds are the provider quirks of docs/provider-quirks.md as status,
// Content-Type, Retry-After and body.
var fuzzSeeds = []struct {
	status      int
	contentType string
	retryAfter  string
	body        string
}{
	{200, "application/json", "", `{"access_token":"fake-access-token-0001","token_type":"bearer","expires_in":3600,"refresh_token":"fake-refresh-token-0001","scope":"read write"}`},
	{200, "application/json;charset=UTF-8", "", `{"access_token":"fake-access-token-0001","expires_in":"3600"}`},
	{200, "application/json", "", `{"access_token":"fake-access-token-0001","expires_in":"3600.0"}`},
	{200, "application/json", "", `{"access_token":"fake-access-token-0001","expires_in":0}`},
	{200, "application/json", "", `{"access_token":"fake-access-token-0001","expires_in":-1}`},
	{200, "application/json", "", `{"access_token":"fake-access-token-0001","expires_in":"NaN"}`},
	{200, "application/json", "", `{"access_token":"fake-access-token-0001","expires_in":1e400}`},
	{200, "application/json", "", `{"access_token":"fake-access-token-0001","expires":5183944}`},
	{200, "text/plain; charset=UTF-8", "", `access_token=fake-access-token-0001&expires=5183999`},
	{200, "application/json", "", `{"access_token":"fake-access-token-0001","issued_at":"1700000000000","instance_url":"https://example.invalid"}`},
	{200, "application/x-www-form-urlencoded; charset=utf-8", "", `access_token=fake-access-token-0001&scope=repo%2Cgist&token_type=bearer`},
	{200, "application/json", "", `{"access_token":"fake-access-token-0001","expires_in":28800,"refresh_token":"fake-refresh-token-0001","refresh_token_expires_in":15811200}`},
	{200, "application/json", "", `{"access_token":"fake-access-token-0001","x_refresh_token_expires_in":"8726400","x_refresh_token_hard_expires_in":157680000,"refresh_token":"fake-refresh-token-0001"}`},
	{200, "application/json", "", `{"access_token":"fake-access-token-0001","refresh_token_expires_in":"soon","scope":["a","b"],"id_token":"fake.id.token"}`},
	{200, "application/json", "", `{"error":"bad_refresh_token","error_description":"The refresh token passed is incorrect or expired.","error_uri":"https://docs.github.com/x"}`},
	{200, "application/x-www-form-urlencoded", "", `error=bad_verification_code&error_description=The+code+passed+is+incorrect+or+expired.`},
	{200, "application/json", "", `{"ok":false,"error":"invalid_refresh_token"}`},
	{200, "application/json", "", `{"token_type":"bearer"}`},
	{200, "text/html", "", `<!DOCTYPE html><html><head><title>Sign in</title></head><body></body></html>`},
	{502, "text/html", "", `<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>`},
	{503, "text/html", "120", `<html><body>Service Unavailable</body></html>`},
	{429, "application/json", "600", `{"error":"rate_limit_exceeded"}`},
	{429, "", "Wed, 04 Mar 2026 05:07:37 GMT", ``},
	{408, "text/plain", "", `Request Timeout`},
	{401, "", "", ``},
	{400, "application/json", "", `{"error":"invalid_grant","error_description":"Token has been expired or revoked."}`},
	{401, "application/json", "", `{"error":"invalid_client"}`},
	{400, "application/json", "", `{"error":"unauthorized_client"}`},
	{400, "application/json", "", `{"error":"interaction_required","error_description":"AADSTS50078: expired"}`},
	{400, "application/json", "", `{"errors":[{"code":"invalid_grant","message":"revoked"}]}`},
	{401, "application/json", "", `{"error":{"code":401,"message":"bad credentials","status":"UNAUTHENTICATED"}}`},
	{400, "application/json", "", `{"error":{"message":"Session has expired","type":"OAuthException","code":190}}`},
	{400, "application/json", "", `{"message":"Bad request"}`},
	{401, "application/json", "", `[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]`},
	{400, "application/json", "", `{"error":"Access Denied","error_description":"You have made too many requests continuously."}`},
	{400, "application/json", "", `{"error":"invalid_grant","error_description":"token fake-refresh-token-0001 revoked","refresh_token":"fake-refresh-token-0001"}`},
	{200, "application/json", "", `{"error":"invalid_grant","error_description":"fake-access-token-0001","access_token":"fake-access-token-0001"}`},
	{400, "application/x-www-form-urlencoded", "", `error=invalid_grant&error_description=bad+fake-refresh-token-0001&refresh_token=fake-refresh-token-0001`},
	{500, "application/json", "", `{"error":"server_error"}`},
	{200, "application/json", "", `[]`},
	{200, "", "", "\xef\xbb\xbf{\"access_token\":\"fake-access-token-0001\"}"},
}

func FuzzParseTokenResponse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s.status, s.contentType, s.retryAfter, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, status int, contentType, retryAfter string, body []byte) {
		h := http.Header{}
		if contentType != "" {
			h.Set("Content-Type", contentType)
		}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		const def = time.Hour
		tokA, errA := ParseTokenResponse(status, h, body, ParseOptions{Now: parseNow})
		tokB, errB := ParseTokenResponse(status, h, body, ParseOptions{Now: parseNow, DefaultExpiresIn: def})

		for _, r := range []struct {
			tok *Token
			err error
			def time.Duration
		}{{tokA, errA, 0}, {tokB, errB, def}} {
			if (r.tok == nil) == (r.err == nil) {
				t.Fatalf("token=%t err=%t: want exactly one", r.tok != nil, r.err != nil)
			}
			if r.err != nil {
				fuzzCheckError(t, r.err, status, body)
			} else {
				fuzzCheckToken(t, r.tok, r.def)
			}
		}
		if (errA == nil) != (errB == nil) {
			t.Fatal("a default lifetime changed whether the answer is a token")
		}
		if tokA == nil {
			return
		}
		// Expiry is known iff the provider gave a lifetime or a default
		// applies.
		switch {
		case tokA.Expiry.IsZero():
			if !tokB.ExpiryDefaulted || !tokB.Expiry.Equal(parseNow.Add(def)) {
				t.Errorf("no provider lifetime, but the default was not applied: %v defaulted=%t", tokB.Expiry, tokB.ExpiryDefaulted)
			}
		default:
			if tokA.ExpiryDefaulted || tokB.ExpiryDefaulted || !tokB.Expiry.Equal(tokA.Expiry) {
				t.Errorf("provider lifetime not used consistently: %v vs %v", tokA.Expiry, tokB.Expiry)
			}
		}
		if known, ok := fuzzKnownLifetime(body); ok && known != !tokA.Expiry.IsZero() {
			t.Errorf("expires_in says known=%t, token Expiry %v", known, tokA.Expiry)
		}
	})
}

func fuzzCheckToken(t *testing.T, tok *Token, def time.Duration) {
	t.Helper()
	if tok.AccessToken == "" || !isVisibleASCII(tok.AccessToken) || !isVisibleASCII(tok.RefreshToken) {
		t.Fatal("token without a usable access token, or with a garbled refresh token")
	}
	if tok.TokenType == "" {
		t.Error("empty TokenType")
	}
	if !tok.IssuedAt.Equal(parseNow) {
		t.Errorf("IssuedAt %v", tok.IssuedAt)
	}
	lifetime := func(name string, at time.Time) {
		if at.IsZero() {
			return
		}
		if d := at.Sub(parseNow); d < time.Second || d > maxTokenLifetime {
			t.Errorf("%s lifetime %v outside [1s, 10y]", name, d)
		}
	}
	lifetime("Expiry", tok.Expiry)
	lifetime("RefreshExpiry", tok.RefreshExpiry)
	lifetime("RefreshHardExpiry", tok.RefreshHardExpiry)
	switch {
	case tok.ExpiryDefaulted && (def == 0 || !tok.Expiry.Equal(parseNow.Add(def))):
		t.Errorf("ExpiryDefaulted with Expiry %v and default %v", tok.Expiry, def)
	case def > 0 && tok.Expiry.IsZero():
		t.Error("a default was given but Expiry is zero")
	}
}

func fuzzCheckError(t *testing.T, err error, status int, body []byte) {
	t.Helper()
	var oe *Error
	if !errors.As(err, &oe) {
		t.Fatalf("error is %T", err)
	}
	if oe.Code == "" || oe.Op != "token" || oe.StatusCode != status {
		t.Errorf("Code %q Op %q StatusCode %d", oe.Code, oe.Op, oe.StatusCode)
	}
	if oe.Kind != KindTransient && oe.Kind != KindTerminal {
		t.Errorf("Kind %v", oe.Kind)
	}
	if oe.Kind == KindTerminal && (status == 408 || status == 429 || status >= 500) {
		t.Errorf("terminal on HTTP %d", status)
	}
	if oe.RetryAfter < 0 || oe.RetryAfter > maxRetryAfterWait {
		t.Errorf("RetryAfter %v", oe.RetryAfter)
	}
	msg := oe.Error()
	if len(oe.Description) > maxDescriptionBytes || !utf8.ValidString(msg) {
		t.Errorf("Description %d bytes, message valid UTF-8 %t", len(oe.Description), utf8.ValidString(msg))
	}
	for i := 0; i < len(msg); i++ {
		if msg[i] < 0x20 || msg[i] == 0x7f {
			t.Fatalf("control byte %#x in the message", msg[i])
		}
	}
	// Our own words: the message without anything the provider chose.
	ours := &Error{Op: oe.Op, StatusCode: oe.StatusCode}
	if oe.Code == CodeInvalidResponse || strings.HasPrefix(oe.Code, "http_") {
		ours.Code = oe.Code
	}
	skeleton := ours.Error()
	for i, s := range fuzzSecrets(body) {
		if strings.Contains(msg, s) && !strings.Contains(skeleton, s) {
			t.Fatalf("error message contains credential #%d (%d bytes)", i, len(s))
		}
	}
}

// fuzzSecrets returns the access_token and refresh_token values a body
// carries, read independently of the parser: from JSON at any depth if the
// body looks like JSON, else from a form. Values shorter than minRedactLen
// are not credentials any provider issues and are left out.
func fuzzSecrets(body []byte) []string {
	var out []string
	keep := func(s string) {
		if len(s) >= minRedactLen {
			out = append(out, s)
		}
	}
	trimmed := bytes.TrimSpace(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")))
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		var lastKey string
		var inObject []bool
		expectKey := false
		for {
			tk, err := dec.Token()
			if err != nil {
				return out
			}
			switch v := tk.(type) {
			case json.Delim:
				switch v {
				case '{':
					inObject = append(inObject, true)
					expectKey = true
				case '[':
					inObject = append(inObject, false)
					expectKey = false
				default:
					inObject = inObject[:len(inObject)-1]
					expectKey = len(inObject) > 0 && inObject[len(inObject)-1]
				}
				continue
			case string:
				if expectKey {
					lastKey = v
					expectKey = false
					continue
				}
				if lastKey == "access_token" || lastKey == "refresh_token" {
					keep(v)
				}
			}
			lastKey = ""
			expectKey = len(inObject) > 0 && inObject[len(inObject)-1]
		}
	}
	form, _ := url.ParseQuery(string(trimmed))
	for _, k := range []string{"access_token", "refresh_token"} {
		for _, v := range form[k] {
			keep(v)
		}
	}
	return out
}

// fuzzKnownLifetime reports, for a plain JSON object answer, whether its
// expires_in says the lifetime is known (a number of at least one second)
// or unknown (absent or null, no expires). ok is false when the body is
// anything else, or the value is one the parser rejects or reads otherwise.
func fuzzKnownLifetime(body []byte) (known, ok bool) {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if dec.Decode(&m) != nil || dec.More() || !bytes.HasPrefix(bytes.TrimSpace(body), []byte("{")) {
		return false, false
	}
	v, present := m["expires_in"]
	if !present || v == nil {
		e, hasExpires := m["expires"]
		return false, !hasExpires || e == nil
	}
	n, isNum := v.(json.Number)
	if !isNum {
		return false, false
	}
	f, err := strconv.ParseFloat(n.String(), 64)
	if err != nil || f < 0 || f > maxTokenLifetime.Seconds() {
		return false, false
	}
	return f >= 1, true
}
