package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Obviously fake credentials. Tests assert on their presence with booleans
// and never print them.
const (
	ptAccess  = "fake-access-token-0001"
	ptRefresh = "fake-refresh-token-0001"
	ptIDToken = "fake.id.token"
)

var parseNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

const ptTenYears = 10 * 365 * 24 * time.Hour

// hdr builds a header with a Content-Type (unless ct is "") and extra
// key/value pairs.
func ptHeader(ct string, kv ...string) http.Header {
	h := http.Header{}
	if ct != "" {
		h.Set("Content-Type", ct)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

const (
	ptJSON = "application/json"
	ptForm = "application/x-www-form-urlencoded"
	ptHTML = "text/html; charset=utf-8"
)

// parseExactlyOne runs ParseTokenResponse and fails the test unless exactly
// one of token and error is non-nil.
func parseExactlyOne(t *testing.T, status int, h http.Header, body string, opts ParseOptions) (*Token, *Error) {
	t.Helper()
	if opts.Now.IsZero() {
		opts.Now = parseNow
	}
	tok, err := ParseTokenResponse(status, h, []byte(body), opts)
	if (tok == nil) == (err == nil) {
		t.Fatalf("got token=%t err=%t, want exactly one", tok != nil, err != nil)
	}
	if err == nil {
		if tok.AccessToken == "" {
			t.Fatal("token without an access token")
		}
		return tok, nil
	}
	var oe *Error
	if !errors.As(err, &oe) {
		t.Fatalf("error is %T, want *oauth.Error", err)
	}
	return nil, oe
}

// ptDiffToken names the fields in which got and want differ, printing values
// only for fields that are not secrets.
func ptDiffToken(got, want *Token) []string {
	var d []string
	secret := func(name string, g, w string) {
		if g != w {
			d = append(d, fmt.Sprintf("%s differs (len %d, want len %d)", name, len(g), len(w)))
		}
	}
	plain := func(name string, g, w any) {
		if g != w {
			d = append(d, fmt.Sprintf("%s = %v, want %v", name, g, w))
		}
	}
	tm := func(name string, g, w time.Time) {
		if !g.Equal(w) {
			d = append(d, fmt.Sprintf("%s = %v, want %v", name, g, w))
		}
	}
	secret("AccessToken", got.AccessToken, want.AccessToken)
	secret("RefreshToken", got.RefreshToken, want.RefreshToken)
	secret("IDToken", got.IDToken, want.IDToken)
	plain("TokenType", got.TokenType, want.TokenType)
	plain("Scope", got.Scope, want.Scope)
	plain("ExpiryDefaulted", got.ExpiryDefaulted, want.ExpiryDefaulted)
	tm("Expiry", got.Expiry, want.Expiry)
	tm("RefreshExpiry", got.RefreshExpiry, want.RefreshExpiry)
	tm("RefreshHardExpiry", got.RefreshHardExpiry, want.RefreshHardExpiry)
	tm("IssuedAt", got.IssuedAt, want.IssuedAt)
	return d
}

// ptToken is the expected token: access token ptAccess, type Bearer, issued
// at parseNow, with the given changes.
func ptToken(change func(*Token)) *Token {
	tok := &Token{AccessToken: ptAccess, TokenType: "Bearer", IssuedAt: parseNow}
	if change != nil {
		change(tok)
	}
	return tok
}

func ptIn(d time.Duration) time.Time { return parseNow.Add(d) }

func TestParseTokenResponseSuccess(t *testing.T) {
	tests := []struct {
		name             string
		status           int
		header           http.Header
		body             string
		defaultExpiresIn time.Duration
		want             *Token
	}{
		{
			name:   "RFC 6749 §5.1 JSON",
			status: 200, header: ptHeader(ptJSON),
			body: `{"access_token":"` + ptAccess + `","token_type":"bearer","expires_in":3600,"refresh_token":"` + ptRefresh + `","scope":"read write"}`,
			want: ptToken(func(t *Token) { t.Expiry = ptIn(time.Hour); t.RefreshToken = ptRefresh; t.Scope = "read write" }),
		},
		{
			name:   "JSON with charset",
			status: 200, header: ptHeader("application/json;charset=UTF-8"),
			body: `{"access_token":"` + ptAccess + `","expires_in":60}`,
			want: ptToken(func(t *Token) { t.Expiry = ptIn(time.Minute) }),
		},
		{
			name:   "JSON without content type",
			status: 200, header: ptHeader(""),
			body: `{"access_token":"` + ptAccess + `"}`,
			want: ptToken(nil),
		},
		{
			name:   "JSON labelled text/html",
			status: 200, header: ptHeader(ptHTML),
			body: `{"access_token":"` + ptAccess + `"}`,
			want: ptToken(nil),
		},
		{
			name:   "JSON labelled text/javascript",
			status: 200, header: ptHeader("text/javascript"),
			body: `{"access_token":"` + ptAccess + `"}`,
			want: ptToken(nil),
		},
		{
			name:   "JSON with byte order mark and white space",
			status: 200, header: ptHeader(ptJSON),
			body: "\xef\xbb\xbf \n" + `{"access_token":"` + ptAccess + `"}` + "\n",
			want: ptToken(nil),
		},
		{
			name:   "malformed content type, JSON body",
			status: 200, header: ptHeader("application/json; charset"),
			body: `{"access_token":"` + ptAccess + `"}`,
			want: ptToken(nil),
		},
		{
			name:   "201 Created",
			status: 201, header: ptHeader(ptJSON),
			body: `{"access_token":"` + ptAccess + `"}`,
			want: ptToken(nil),
		},
		{
			name:   "token_type missing defaults to Bearer",
			status: 200, header: ptHeader(ptJSON),
			body: `{"access_token":"` + ptAccess + `"}`,
			want: ptToken(nil),
		},
		{
			name:   "token_type BEARER normalised",
			status: 200, header: ptHeader(ptJSON),
			body: `{"access_token":"` + ptAccess + `","token_type":"BEARER"}`,
			want: ptToken(nil),
		},
		{
			name:   "token_type empty string defaults to Bearer",
			status: 200, header: ptHeader(ptJSON),
			body: `{"access_token":"` + ptAccess + `","token_type":""}`,
			want: ptToken(nil),
		},
		{
			name:   "token_type DPoP kept",
			status: 200, header: ptHeader(ptJSON),
			body: `{"access_token":"` + ptAccess + `","token_type":"DPoP"}`,
			want: ptToken(func(t *Token) { t.TokenType = "DPoP" }),
		},
		{
			name:   "scope as JSON array",
			status: 200, header: ptHeader(ptJSON),
			body: `{"access_token":"` + ptAccess + `","scope":["read","write"]}`,
			want: ptToken(func(t *Token) { t.Scope = "read write" }),
		},
		{
			name:   "scope with GitHub commas kept",
			status: 200, header: ptHeader(ptJSON),
			body: `{"access_token":"` + ptAccess + `","scope":"repo,gist"}`,
			want: ptToken(func(t *Token) { t.Scope = "repo,gist" }),
		},
		{
			name:   "scope white space collapsed",
			status: 200, header: ptHeader(ptJSON),
			body: `{"access_token":"` + ptAccess + `","scope":"  read \t write "}`,
			want: ptToken(func(t *Token) { t.Scope = "read write" }),
		},
		{
			name:   "id_token",
			status: 200, header: ptHeader(ptJSON),
			body: `{"access_token":"` + ptAccess + `","id_token":"` + ptIDToken + `"}`,
			want: ptToken(func(t *Token) { t.IDToken = ptIDToken }),
		},
		{
			name:   "no refresh_token in a refresh response",
			status: 200, header: ptHeader(ptJSON),
			body: `{"access_token":"` + ptAccess + `","expires_in":3600}`,
			want: ptToken(func(t *Token) { t.Expiry = ptIn(time.Hour) }),
		},
		{
			name:   "nulls are absent",
			status: 200, header: ptHeader(ptJSON),
			body: `{"access_token":"` + ptAccess + `","refresh_token":null,"scope":null,"expires_in":null,"token_type":null,"error":null}`,
			want: ptToken(nil),
		},
		{
			name:   "empty error fields beside a token",
			status: 200, header: ptHeader(ptJSON),
			body: `{"access_token":"` + ptAccess + `","error":"","errors":[],"ok":true}`,
			want: ptToken(nil),
		},
		{
			name:   "GitHub classic form",
			status: 200, header: ptHeader("application/x-www-form-urlencoded; charset=utf-8"),
			body: "access_token=" + ptAccess + "&scope=repo%2Cgist&token_type=bearer",
			want: ptToken(func(t *Token) { t.Scope = "repo,gist" }),
		},
		{
			name:   "GitHub App form with refresh lifetimes",
			status: 200, header: ptHeader(ptForm),
			body: "access_token=" + ptAccess + "&expires_in=28800&refresh_token=" + ptRefresh + "&refresh_token_expires_in=15811200&scope=&token_type=bearer",
			want: ptToken(func(t *Token) {
				t.Expiry = ptIn(8 * time.Hour)
				t.RefreshToken = ptRefresh
				t.RefreshExpiry = ptIn(15811200 * time.Second)
			}),
		},
		{
			name:   "Facebook classic text/plain form with expires",
			status: 200, header: ptHeader("text/plain; charset=UTF-8"),
			body: "access_token=" + ptAccess + "&expires=5183999",
			want: ptToken(func(t *Token) { t.Expiry = ptIn(5183999 * time.Second) }),
		},
		{
			name:   "form without content type",
			status: 200, header: ptHeader(""),
			body: "access_token=" + ptAccess + "&token_type=bearer",
			want: ptToken(nil),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, oe := parseExactlyOne(t, tt.status, tt.header, tt.body, ParseOptions{DefaultExpiresIn: tt.defaultExpiresIn})
			if oe != nil {
				t.Fatalf("error code %q kind %v: %s", oe.Code, oe.Kind, oe.Description)
			}
			for _, d := range ptDiffToken(tok, tt.want) {
				t.Error(d)
			}
		})
	}
}

func TestParseTokenResponseLifetimes(t *testing.T) {
	at := `"access_token":"` + ptAccess + `"`
	tests := []struct {
		name             string
		header           http.Header
		body             string
		defaultExpiresIn time.Duration
		want             *Token
	}{
		{"expires_in number", ptHeader(ptJSON), `{` + at + `,"expires_in":3600}`, 0,
			ptToken(func(t *Token) { t.Expiry = ptIn(time.Hour) })},
		{"expires_in numeric string (PayPal)", ptHeader(ptJSON), `{` + at + `,"expires_in":"3600"}`, 0,
			ptToken(func(t *Token) { t.Expiry = ptIn(time.Hour) })},
		{"expires_in string with white space", ptHeader(ptJSON), `{` + at + `,"expires_in":" 3600 "}`, 0,
			ptToken(func(t *Token) { t.Expiry = ptIn(time.Hour) })},
		{"expires_in 3600.0 string", ptHeader(ptJSON), `{` + at + `,"expires_in":"3600.0"}`, 0,
			ptToken(func(t *Token) { t.Expiry = ptIn(time.Hour) })},
		{"expires_in fraction truncated", ptHeader(ptJSON), `{` + at + `,"expires_in":3600.9}`, 0,
			ptToken(func(t *Token) { t.Expiry = ptIn(time.Hour) })},
		{"expires_in exponent", ptHeader(ptJSON), `{` + at + `,"expires_in":3.6e3}`, 0,
			ptToken(func(t *Token) { t.Expiry = ptIn(time.Hour) })},
		{"expires_in exactly ten years", ptHeader(ptJSON), `{` + at + `,"expires_in":315360000}`, 0,
			ptToken(func(t *Token) { t.Expiry = ptIn(ptTenYears) })},
		{"expires_in absent, no default: unknown", ptHeader(ptJSON), `{` + at + `}`, 0,
			ptToken(nil)},
		{"expires_in absent (Salesforce issued_at only), default applies", ptHeader(ptJSON),
			`{` + at + `,"issued_at":"1700000000000","instance_url":"https://example.invalid"}`, 2 * time.Hour,
			ptToken(func(t *Token) { t.Expiry = ptIn(2 * time.Hour); t.ExpiryDefaulted = true })},
		{"expires_in 0 means unknown", ptHeader(ptJSON), `{` + at + `,"expires_in":0}`, 0,
			ptToken(nil)},
		{"expires_in 0 takes the default", ptHeader(ptJSON), `{` + at + `,"expires_in":0}`, time.Hour,
			ptToken(func(t *Token) { t.Expiry = ptIn(time.Hour); t.ExpiryDefaulted = true })},
		{"expires_in \"0\" takes the default", ptHeader(ptJSON), `{` + at + `,"expires_in":"0"}`, time.Hour,
			ptToken(func(t *Token) { t.Expiry = ptIn(time.Hour); t.ExpiryDefaulted = true })},
		{"expires_in under a second means unknown", ptHeader(ptJSON), `{` + at + `,"expires_in":0.5}`, 0,
			ptToken(nil)},
		{"expires_in empty string is absent", ptHeader(ptJSON), `{` + at + `,"expires_in":""}`, time.Hour,
			ptToken(func(t *Token) { t.Expiry = ptIn(time.Hour); t.ExpiryDefaulted = true })},
		{"provider lifetime beats the default", ptHeader(ptJSON), `{` + at + `,"expires_in":60}`, time.Hour,
			ptToken(func(t *Token) { t.Expiry = ptIn(time.Minute) })},
		{"Facebook expires", ptHeader(ptJSON), `{` + at + `,"expires":5183944}`, 0,
			ptToken(func(t *Token) { t.Expiry = ptIn(5183944 * time.Second) })},
		{"expires_in wins over expires", ptHeader(ptJSON), `{` + at + `,"expires_in":60,"expires":5183944}`, 0,
			ptToken(func(t *Token) { t.Expiry = ptIn(time.Minute) })},
		{"expires_in 0 does not fall back to expires", ptHeader(ptJSON), `{` + at + `,"expires_in":0,"expires":5183944}`, 0,
			ptToken(nil)},
		{"GitHub App refresh_token_expires_in", ptHeader(ptJSON),
			`{` + at + `,"expires_in":28800,"refresh_token":"` + ptRefresh + `","refresh_token_expires_in":15811200}`, 0,
			ptToken(func(t *Token) {
				t.Expiry = ptIn(8 * time.Hour)
				t.RefreshToken = ptRefresh
				t.RefreshExpiry = ptIn(15811200 * time.Second)
			})},
		{"Intuit x_refresh_token_expires_in and hard expiry as strings", ptHeader(ptJSON),
			`{` + at + `,"expires_in":3600,"refresh_token":"` + ptRefresh + `","x_refresh_token_expires_in":"8726400","x_refresh_token_hard_expires_in":"157680000"}`, 0,
			ptToken(func(t *Token) {
				t.Expiry = ptIn(time.Hour)
				t.RefreshToken = ptRefresh
				t.RefreshExpiry = ptIn(8726400 * time.Second)
				t.RefreshHardExpiry = ptIn(157680000 * time.Second)
			})},
		{"refresh_token_expires_in wins over x_refresh_token_expires_in", ptHeader(ptJSON),
			`{` + at + `,"refresh_token_expires_in":100,"x_refresh_token_expires_in":200}`, 0,
			ptToken(func(t *Token) { t.RefreshExpiry = ptIn(100 * time.Second) })},
		{"refresh_token_expires_in 0 is unknown", ptHeader(ptJSON),
			`{` + at + `,"refresh_token_expires_in":0}`, 0,
			ptToken(nil)},
		{"refresh lifetime without a refresh token is kept", ptHeader(ptJSON),
			`{` + at + `,"refresh_token_expires_in":100}`, 0,
			ptToken(func(t *Token) { t.RefreshExpiry = ptIn(100 * time.Second) })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, oe := parseExactlyOne(t, 200, tt.header, tt.body, ParseOptions{DefaultExpiresIn: tt.defaultExpiresIn})
			if oe != nil {
				t.Fatalf("error code %q: %s", oe.Code, oe.Description)
			}
			for _, d := range ptDiffToken(tok, tt.want) {
				t.Error(d)
			}
		})
	}
}

func TestParseTokenResponseBadExpiresInRejected(t *testing.T) {
	bad := []string{
		`-1`, `"-5"`, `-0.5`, `"NaN"`, `"Inf"`, `"-Inf"`, `"Infinity"`, `"0x10"`, `"1_000"`,
		`"abc"`, `"3600s"`, `"+3600"`, `".5"`, `"1e"`, `true`, `{}`, `[3600]`, `1e400`,
		`315360001`, `"99999999999999999999999"`,
	}
	for _, field := range []string{"expires_in", "expires"} {
		for _, v := range bad {
			t.Run(field+"="+v, func(t *testing.T) {
				body := `{"access_token":"` + ptAccess + `","refresh_token":"` + ptRefresh + `","` + field + `":` + v + `}`
				_, oe := parseExactlyOne(t, 200, ptHeader(ptJSON), body, ParseOptions{DefaultExpiresIn: time.Hour})
				if oe == nil {
					t.Fatal("garbage lifetime became a token")
				}
				if oe.Code != CodeInvalidResponse || oe.Kind != KindTransient || !errors.Is(oe, ErrTransient) {
					t.Errorf("code %q kind %v, want invalid_response transient", oe.Code, oe.Kind)
				}
				if !strings.Contains(oe.Description, field) {
					t.Errorf("description %q does not name %s", oe.Description, field)
				}
			})
		}
	}
	t.Run("bad expires_in is not rescued by a good expires", func(t *testing.T) {
		_, oe := parseExactlyOne(t, 200, ptHeader(ptJSON), `{"access_token":"`+ptAccess+`","expires_in":-1,"expires":60}`, ParseOptions{})
		if oe == nil || oe.Code != CodeInvalidResponse {
			t.Fatal("want invalid_response")
		}
	})
}

// A garbled optional field must not cost the token (which may carry a
// rotated refresh token whose predecessor is already revoked).
func TestParseTokenResponseBadOptionalFieldsIgnored(t *testing.T) {
	tests := []struct {
		name   string
		extra  string
		fields []string // reported to OnIgnored, in order
		want   *Token
	}{
		{"refresh_token_expires_in garbage", `"refresh_token_expires_in":"soon"`,
			[]string{"refresh_token_expires_in"}, ptToken(func(t *Token) { t.RefreshToken = ptRefresh })},
		{"refresh_token_expires_in negative, x_ fallback used", `"refresh_token_expires_in":-1,"x_refresh_token_expires_in":100`,
			[]string{"refresh_token_expires_in"}, ptToken(func(t *Token) { t.RefreshToken = ptRefresh; t.RefreshExpiry = ptIn(100 * time.Second) })},
		{"x_refresh_token_expires_in absurd", `"x_refresh_token_expires_in":1e12`,
			[]string{"x_refresh_token_expires_in"}, ptToken(func(t *Token) { t.RefreshToken = ptRefresh })},
		{"x_refresh_token_hard_expires_in NaN", `"x_refresh_token_hard_expires_in":"NaN"`,
			[]string{"x_refresh_token_hard_expires_in"}, ptToken(func(t *Token) { t.RefreshToken = ptRefresh })},
		{"scope a number", `"scope":42`,
			[]string{"scope"}, ptToken(func(t *Token) { t.RefreshToken = ptRefresh })},
		{"scope list with an object", `"scope":["read",{}]`,
			[]string{"scope"}, ptToken(func(t *Token) { t.RefreshToken = ptRefresh })},
		{"scope with a control character", `"scope":"read\u0000write"`,
			[]string{"scope"}, ptToken(func(t *Token) { t.RefreshToken = ptRefresh })},
		{"id_token an object", `"id_token":{"sub":"x"}`,
			[]string{"id_token"}, ptToken(func(t *Token) { t.RefreshToken = ptRefresh })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			opts := ParseOptions{OnIgnored: func(field, reason string) {
				got = append(got, field)
				if reason == "" || strings.Contains(reason, ptRefresh) || strings.Contains(reason, ptAccess) {
					t.Errorf("reason for %s is empty or carries a credential", field)
				}
			}}
			body := `{"access_token":"` + ptAccess + `","refresh_token":"` + ptRefresh + `",` + tt.extra + `}`
			tok, oe := parseExactlyOne(t, 200, ptHeader(ptJSON), body, opts)
			if oe != nil {
				t.Fatalf("the token was lost: %q %s", oe.Code, oe.Description)
			}
			for _, d := range ptDiffToken(tok, tt.want) {
				t.Error(d)
			}
			if strings.Join(got, ",") != strings.Join(tt.fields, ",") {
				t.Errorf("OnIgnored got %v, want %v", got, tt.fields)
			}
		})
	}
	t.Run("nil OnIgnored is fine", func(t *testing.T) {
		if _, oe := parseExactlyOne(t, 200, ptHeader(ptJSON), `{"access_token":"`+ptAccess+`","scope":1}`, ParseOptions{}); oe != nil {
			t.Fatal(oe)
		}
	})
}

// ptWantErr describes an expected *Error.
type ptWantErr struct {
	code       string
	kind       Kind
	retryAfter time.Duration
	descHas    []string // substrings of Description
	uri        string
}

func ptCheckErr(t *testing.T, oe *Error, status int, w ptWantErr) {
	t.Helper()
	if oe == nil {
		t.Fatal("no error")
	}
	if oe.Code != w.code {
		t.Errorf("Code = %q, want %q", oe.Code, w.code)
	}
	if oe.Kind != w.kind {
		t.Errorf("Kind = %v, want %v", oe.Kind, w.kind)
	}
	if oe.StatusCode != status {
		t.Errorf("StatusCode = %d, want %d", oe.StatusCode, status)
	}
	if got := errors.Is(oe, ErrReauthRequired); got != (w.kind == KindTerminal) {
		t.Errorf("errors.Is(err, ErrReauthRequired) = %t", got)
	}
	if got := errors.Is(oe, ErrTransient); got != (w.kind == KindTransient) {
		t.Errorf("errors.Is(err, ErrTransient) = %t", got)
	}
	if Terminal(oe) != (w.kind == KindTerminal) {
		t.Errorf("Terminal(err) = %t", Terminal(oe))
	}
	if oe.RetryAfter != w.retryAfter || RetryAfter(oe) != w.retryAfter {
		t.Errorf("RetryAfter = %v, want %v", oe.RetryAfter, w.retryAfter)
	}
	for _, s := range w.descHas {
		if !strings.Contains(oe.Description, s) {
			t.Errorf("Description %q lacks %q", oe.Description, s)
		}
	}
	if oe.URI != w.uri {
		t.Errorf("URI = %q, want %q", oe.URI, w.uri)
	}
	msg := oe.Error()
	if !strings.HasPrefix(msg, "oauth: ") || !strings.Contains(msg, oe.Code) {
		t.Errorf("Error() = %q, want oauth: prefix and the code", msg)
	}
	if strings.Contains(msg, ptAccess) || strings.Contains(msg, ptRefresh) {
		t.Error("Error() contains a credential")
	}
	if len(oe.Description) > maxDescriptionBytes || !utf8.ValidString(oe.Description) {
		t.Errorf("Description is %d bytes, valid UTF-8 %t", len(oe.Description), utf8.ValidString(oe.Description))
	}
}

func TestParseTokenResponseInvalidSuccess(t *testing.T) {
	tr := ptWantErr{code: CodeInvalidResponse, kind: KindTransient}
	with := func(w ptWantErr, desc ...string) ptWantErr { w.descHas = desc; return w }
	tests := []struct {
		name   string
		status int
		header http.Header
		body   string
		want   ptWantErr
	}{
		{"no access_token", 200, ptHeader(ptJSON), `{"token_type":"bearer","expires_in":3600}`, with(tr, "no access_token")},
		{"empty access_token", 200, ptHeader(ptJSON), `{"access_token":"","refresh_token":"` + ptRefresh + `"}`, with(tr, "no access_token")},
		{"access_token a number", 200, ptHeader(ptJSON), `{"access_token":12345678901}`, with(tr, "access_token is not a string")},
		{"access_token an object", 200, ptHeader(ptJSON), `{"access_token":{"value":"x"}}`, with(tr, "access_token is not a string")},
		{"access_token with a newline", 200, ptHeader(ptJSON), `{"access_token":"fake-access\ntoken"}`, with(tr, "access_token contains")},
		{"access_token non-ASCII", 200, ptHeader(ptJSON), `{"access_token":"fake-tökenvalue"}`, with(tr, "access_token contains")},
		{"access_token only spaces", 200, ptHeader(ptJSON), `{"access_token":"    "}`, with(tr, "access_token contains")},
		{"refresh_token a number", 200, ptHeader(ptJSON), `{"access_token":"` + ptAccess + `","refresh_token":42}`, with(tr, "refresh_token is not a string")},
		{"refresh_token with a control character", 200, ptHeader(ptJSON), `{"access_token":"` + ptAccess + `","refresh_token":"fake\u0007rt"}`, with(tr, "refresh_token contains")},
		{"token_type a number", 200, ptHeader(ptJSON), `{"access_token":"` + ptAccess + `","token_type":1}`, with(tr, "token_type")},
		{"token_type with a space", 200, ptHeader(ptJSON), `{"access_token":"` + ptAccess + `","token_type":"Bearer x"}`, with(tr, "token_type")},
		{"a message but no token", 200, ptHeader(ptJSON), `{"message":"Something went wrong"}`, with(tr, "no access_token", "Something went wrong")},
		{"Slack ok:false without error", 200, ptHeader(ptJSON), `{"ok":false}`, tr},
		{"empty body", 200, ptHeader(ptJSON), ``, with(tr, "empty")},
		{"white space body", 200, ptHeader(""), " \r\n\t", with(tr, "empty")},
		{"204 No Content", 204, ptHeader(""), ``, with(tr, "empty")},
		{"JSON array", 200, ptHeader(ptJSON), `[]`, with(tr, "not an object")},
		{"JSON string", 200, ptHeader(ptJSON), `"` + ptAccess + `"`, with(tr, "malformed JSON")},
		{"JSON null", 200, ptHeader(ptJSON), `null`, with(tr, "malformed JSON")},
		{"truncated JSON", 200, ptHeader(ptJSON), `{"access_token":"` + ptAccess, with(tr, "malformed JSON")},
		{"trailing data after JSON", 200, ptHeader(ptJSON), `{"access_token":"` + ptAccess + `"} x`, with(tr, "malformed JSON")},
		{"two JSON objects", 200, ptHeader(ptJSON), `{"access_token":"` + ptAccess + `"}{"access_token":"` + ptRefresh + `"}`, with(tr, "malformed JSON")},
		{"login page with 200", 200, ptHeader(ptHTML), `<!DOCTYPE html><html><head><title>Sign in</title></head><body><form>access_token=` + ptAccess + `</form></body></html>`, with(tr, "HTML")},
		{"HTML without content type", 200, ptHeader(""), "\n<html><body>Welcome</body></html>", with(tr, "HTML")},
		{"HTML labelled JSON", 200, ptHeader(ptJSON), `<html><body>oops</body></html>`, with(tr, "HTML")},
		{"XML", 200, ptHeader("application/xml"), `<?xml version="1.0"?><token>` + ptAccess + `</token>`, with(tr, "HTML")},
		{"text/plain prose", 200, ptHeader("text/plain"), `OK`, with(tr, "neither JSON nor form")},
		{"form body labelled JSON", 200, ptHeader(ptJSON), `access_token=` + ptAccess, with(tr, "malformed JSON")},
		{"unknown content type", 200, ptHeader("application/octet-stream; x=y"), `access_tokn`, with(tr, "neither JSON nor form")},
		{"YAML", 200, ptHeader("application/yaml"), `access_token: ` + ptAccess, with(tr, "unexpected content type application/yaml")},
		{"form without access_token", 200, ptHeader(ptForm), `token_type=bearer&scope=x`, with(tr, "no access_token")},
		{"malformed form", 200, ptHeader(ptForm), `access_token=%zz`, with(tr, "malformed form")},
		{"Retry-After on a garbled 200 is kept", 200, ptHeader(ptHTML, "Retry-After", "30"), `<html></html>`,
			ptWantErr{code: CodeInvalidResponse, kind: KindTransient, retryAfter: 30 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, oe := parseExactlyOne(t, tt.status, tt.header, tt.body, ParseOptions{DefaultExpiresIn: time.Hour})
			ptCheckErr(t, oe, tt.status, tt.want)
		})
	}
}

func TestParseTokenResponseBodyLimit(t *testing.T) {
	pad := strings.Repeat(" ", maxParseBody)
	over := `{"access_token":"` + ptAccess + `"}` + pad
	if _, oe := parseExactlyOne(t, 200, ptHeader(ptJSON), over, ParseOptions{}); oe == nil || oe.Code != CodeInvalidResponse || !strings.Contains(oe.Description, "1 MiB") {
		t.Errorf("a body over 1 MiB was not rejected as invalid_response")
	}
	at := `{"access_token":"` + ptAccess + `"}`
	exact := at + pad[:maxParseBody-len(at)]
	if _, oe := parseExactlyOne(t, 200, ptHeader(ptJSON), exact, ParseOptions{}); oe != nil {
		t.Errorf("a body of exactly 1 MiB was rejected: %s", oe.Description)
	}
	oe := ParseErrorResponse("token", 503, ptHeader(ptJSON), []byte(`{"error":"invalid_grant"}`+pad), parseNow)
	ptCheckErr(t, oe, 503, ptWantErr{code: "http_503", kind: KindTransient, descHas: []string{"1 MiB"}})
}

// Failed answers, each as a provider really sends it.
func TestParseTokenResponseErrors(t *testing.T) {
	term := func(code string, desc ...string) ptWantErr {
		return ptWantErr{code: code, kind: KindTerminal, descHas: desc}
	}
	trans := func(code string, desc ...string) ptWantErr {
		return ptWantErr{code: code, kind: KindTransient, descHas: desc}
	}
	after := func(w ptWantErr, d time.Duration) ptWantErr { w.retryAfter = d; return w }
	withURI := func(w ptWantErr, u string) ptWantErr { w.uri = u; return w }
	tests := []struct {
		name   string
		status int
		header http.Header
		body   string
		want   ptWantErr
	}{
		// RFC 6749 §5.2 and the terminal codes.
		{"Google invalid_grant", 400, ptHeader(ptJSON), `{"error":"invalid_grant","error_description":"Token has been expired or revoked."}`,
			term("invalid_grant", "Token has been expired or revoked.")},
		{"invalid_client 401", 401, ptHeader(ptJSON, "WWW-Authenticate", `Basic realm="x"`), `{"error":"invalid_client","error_description":"Client authentication failed"}`,
			term("invalid_client", "Client authentication failed")},
		{"unauthorized_client", 400, ptHeader(ptJSON), `{"error":"unauthorized_client"}`, term("unauthorized_client")},
		{"Microsoft sign-in frequency", 400, ptHeader(ptJSON), `{"error":"interaction_required","error_description":"AADSTS50078: Presented multi-factor authentication has expired due to policies configured by your administrator.","error_codes":[50078],"suberror":"basic_action"}`,
			term("interaction_required", "AADSTS50078")},
		{"Microsoft invalid_grant AADSTS700082", 400, ptHeader(ptJSON), `{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity."}`,
			term("invalid_grant", "AADSTS700082")},
		{"Salesforce concurrent refresh", 400, ptHeader(ptJSON), `{"error":"invalid_grant","error_description":"token request is already being processed"}`,
			term("invalid_grant", "already being processed")},
		{"upper-case code", 400, ptHeader(ptJSON), `{"error":"INVALID_GRANT"}`, term("invalid_grant")},
		{"invalid_request is transient", 400, ptHeader(ptJSON), `{"error":"invalid_request","error_description":"Missing parameter: refresh_token"}`,
			trans("invalid_request", "Missing parameter")},
		{"unknown extension code kept, transient", 400, ptHeader(ptJSON), `{"error":"x_strange_failure"}`, trans("x_strange_failure")},
		{"error_uri kept", 400, ptHeader(ptJSON), `{"error":"invalid_grant","error_uri":"https://docs.example.invalid/errors#invalid_grant"}`,
			withURI(term("invalid_grant"), "https://docs.example.invalid/errors#invalid_grant")},
		{"javascript: error_uri dropped", 400, ptHeader(ptJSON), `{"error":"invalid_grant","error_uri":"javascript:alert(1)"}`,
			term("invalid_grant")},
		{"RFC form-encoded error", 400, ptHeader(ptForm), `error=invalid_grant&error_description=expired+refresh+token`,
			term("invalid_grant", "expired refresh token")},

		// Errors with HTTP 200.
		{"GitHub 200 bad_refresh_token", 200, ptHeader(ptJSON), `{"error":"bad_refresh_token","error_description":"The refresh token passed is incorrect or expired.","error_uri":"https://docs.github.com/apps/troubleshooting"}`,
			withURI(term("invalid_grant", "bad_refresh_token", "incorrect or expired"), "https://docs.github.com/apps/troubleshooting")},
		{"GitHub 200 form bad_verification_code", 200, ptHeader("application/x-www-form-urlencoded; charset=utf-8"), `error=bad_verification_code&error_description=The+code+passed+is+incorrect+or+expired.&error_uri=https%3A%2F%2Fdocs.github.com%2Fapps`,
			withURI(term("invalid_grant", "bad_verification_code"), "https://docs.github.com/apps")},
		{"GitHub 200 incorrect_client_credentials", 200, ptHeader(ptJSON), `{"error":"incorrect_client_credentials","error_description":"The client_id and/or client_secret passed are incorrect."}`,
			term("invalid_client", "incorrect_client_credentials")},
		{"GitHub 200 unknown code", 200, ptHeader(ptJSON), `{"error":"unverified_user_email"}`, trans("unverified_user_email")},
		{"200 invalid_grant", 200, ptHeader(ptJSON), `{"error":"invalid_grant"}`, term("invalid_grant")},
		{"200 unauthorized_client", 200, ptHeader(ptJSON), `{"error":"unauthorized_client"}`, term("unauthorized_client")},
		{"Slack 200 ok:false invalid_refresh_token", 200, ptHeader(ptJSON), `{"ok":false,"error":"invalid_refresh_token"}`, term("invalid_grant", "invalid_refresh_token")},
		{"Slack 200 ok:false ratelimited", 200, ptHeader(ptJSON), `{"ok":false,"error":"ratelimited"}`, trans("ratelimited")},
		{"200 error and a token: the error wins", 200, ptHeader(ptJSON), `{"error":"invalid_grant","access_token":"` + ptAccess + `"}`, term("invalid_grant")},
		{"200 error object", 200, ptHeader(ptJSON), `{"error":{"code":"invalid_grant","message":"revoked"}}`, term("invalid_grant", "revoked")},
		{"200 error true", 200, ptHeader(ptJSON), `{"error":true,"message":"upstream failed"}`, trans(CodeInvalidResponse, "upstream failed")},
		{"200 errors list", 200, ptHeader(ptJSON), `{"errors":[{"message":"internal"}],"access_token":"` + ptAccess + `"}`, trans(CodeInvalidResponse, "internal")},
		{"200 Salesforce-style array", 200, ptHeader(ptJSON), `[{"errorCode":"INVALID_GRANT","message":"expired"}]`, term("invalid_grant", "expired")},

		// Status only: HTML, empty, prose.
		{"bare 401", 401, ptHeader(""), ``, trans("http_401")},
		{"bare 403 text", 403, ptHeader("text/plain"), `Forbidden`, trans("http_403", "neither JSON nor form")},
		{"404", 404, ptHeader(ptHTML), `<html><body>Not Found</body></html>`, trans("http_404", "HTML")},
		{"302 to a login page", 302, ptHeader(ptHTML, "Location", "https://login.example.invalid/"), ``, trans("http_302")},
		{"gateway 502 HTML", 502, ptHeader(ptHTML), `<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>`,
			trans("http_502", "HTML")},
		{"503 HTML with Retry-After", 503, ptHeader(ptHTML, "Retry-After", "120"), `<html><body>Service Unavailable</body></html>`,
			after(trans("http_503", "HTML"), 2*time.Minute)},
		{"504 empty", 504, ptHeader(""), ``, trans("http_504")},
		{"408", 408, ptHeader("text/plain"), `Request Timeout`, trans("http_408")},
		{"500 server_error", 500, ptHeader(ptJSON), `{"error":"server_error"}`, trans("server_error")},
		{"503 temporarily_unavailable", 503, ptHeader(ptJSON), `{"error":"temporarily_unavailable"}`, trans("temporarily_unavailable")},
		{"500 invalid_grant is not believed", 500, ptHeader(ptJSON), `{"error":"invalid_grant"}`, trans("invalid_grant")},
		{"429 invalid_client is not believed", 429, ptHeader(ptJSON), `{"error":"invalid_client"}`, trans("invalid_client")},
		{"status out of range", 999, ptHeader(""), ``, trans(CodeInvalidResponse)},

		// Rate limits.
		{"429 with Retry-After seconds", 429, ptHeader(ptJSON, "Retry-After", "600"), `{"error":"rate_limit_exceeded"}`,
			after(trans("rate_limit_exceeded"), 10*time.Minute)},
		{"429 with Retry-After date", 429, ptHeader("", "Retry-After", parseNow.Add(90*time.Second).Format(http.TimeFormat)), ``,
			after(trans("http_429"), 90*time.Second)},
		{"429 with absurd Retry-After capped", 429, ptHeader("", "Retry-After", "86400"), ``,
			after(trans("http_429"), time.Hour)},
		{"Zoho throttling", 400, ptHeader(ptJSON), `{"error":"Access Denied","error_description":"You have made too many requests continuously. Please try again after some time."}`,
			trans("http_400", "Access Denied", "too many requests")},
		{"Retry-After on a 400 is honoured", 400, ptHeader(ptJSON, "Retry-After", "5"), `{"error":"invalid_request"}`,
			after(trans("invalid_request"), 5*time.Second)},

		// Non-RFC envelopes.
		{"errors list with RFC code", 400, ptHeader(ptJSON), `{"errors":[{"code":"invalid_grant","message":"Refresh token revoked"}]}`,
			term("invalid_grant", "Refresh token revoked")},
		{"errors list of strings", 400, ptHeader(ptJSON), `{"errors":["invalid_grant"]}`, term("invalid_grant")},
		{"errors list with unknown code", 400, ptHeader(ptJSON), `{"errors":[{"code":"SOME_FAILURE","message":"it broke"}]}`,
			trans("http_400", "SOME_FAILURE", "it broke")},
		{"error object with RFC code", 401, ptHeader(ptJSON), `{"error":{"code":"invalid_client","message":"Client authentication failed"}}`,
			term("invalid_client", "Client authentication failed")},
		{"Google API error object", 401, ptHeader(ptJSON), `{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}`,
			trans("http_401", "UNAUTHENTICATED", "401", "invalid authentication credentials")},
		{"Facebook OAuthException", 400, ptHeader(ptJSON), `{"error":{"message":"Error validating access token: Session has expired.","type":"OAuthException","code":190,"error_subcode":463,"fbtrace_id":"Abc"}}`,
			trans("http_400", "OAuthException 190", "Session has expired")},
		{"message only", 400, ptHeader(ptJSON), `{"message":"Bad request"}`, trans("http_400", "Bad request")},
		{"message only on 500", 500, ptHeader(ptJSON), `{"message":"Internal server error"}`, trans("http_500", "Internal server error")},
		{"problem details", 400, ptHeader("application/problem+json"), `{"type":"about:blank","title":"Bad Request","status":400,"detail":"refresh_token is required"}`,
			trans("http_400", "refresh_token is required")},
		{"Salesforce REST array", 401, ptHeader(ptJSON), `[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]`,
			trans("http_401", "INVALID_SESSION_ID", "Session expired or invalid")},
		{"JSON number body", 400, ptHeader(ptJSON), `400`, trans("http_400", "malformed JSON")},
		{"empty JSON object", 400, ptHeader(ptJSON), `{}`, trans("http_400")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, oe := parseExactlyOne(t, tt.status, tt.header, tt.body, ParseOptions{Op: "refresh", DefaultExpiresIn: time.Hour})
			ptCheckErr(t, oe, tt.status, tt.want)
			if oe.Op != "refresh" {
				t.Errorf("Op = %q, want refresh", oe.Op)
			}
			if !strings.HasPrefix(oe.Error(), "oauth: refresh: ") {
				t.Errorf("Error() = %q", oe.Error())
			}
			// ParseErrorResponse agrees for every failed status.
			if tt.status/100 != 2 {
				pe := ParseErrorResponse("refresh", tt.status, tt.header, []byte(tt.body), parseNow)
				if *pe != *oe {
					t.Errorf("ParseErrorResponse = %+v, ParseTokenResponse gave %+v", pe, oe)
				}
			}
		})
	}
}

// A provider that echoes credentials back must not get them into an error.
func TestParseErrorsNeverCarryCredentials(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		header  http.Header
		body    string
		secrets []string
		code    string
	}{
		{"refresh_token echoed in description", 400, ptHeader(ptJSON),
			`{"error":"invalid_grant","error_description":"refresh token ` + ptRefresh + ` is revoked","refresh_token":"` + ptRefresh + `"}`,
			[]string{ptRefresh}, "invalid_grant"},
		{"access_token echoed in a 200 error", 200, ptHeader(ptJSON),
			`{"error":"bad_refresh_token","error_description":"issued ` + ptAccess + ` then revoked","access_token":"` + ptAccess + `"}`,
			[]string{ptAccess}, "invalid_grant"},
		{"form echo", 400, ptHeader(ptForm),
			`error=invalid_grant&error_description=bad+` + ptRefresh + `&refresh_token=` + ptRefresh,
			[]string{ptRefresh}, "invalid_grant"},
		{"echo nested in the body", 401, ptHeader(ptJSON),
			`{"error":{"message":"token ` + ptAccess + ` rejected","request":{"access_token":"` + ptAccess + `"}}}`,
			[]string{ptAccess}, "http_401"},
		{"JSON-escaped echo", 400, ptHeader(ptJSON),
			`{"error":"invalid_grant","error_description":"\u0066ake-refresh-token-0001","refresh_token":"` + ptRefresh + `"}`,
			[]string{ptRefresh}, "invalid_grant"},
		{"duplicate key: the first value is scrubbed too", 400, ptHeader(ptJSON),
			`{"refresh_token":"` + ptRefresh + `","refresh_token":"fake-other-value-99","error":"invalid_grant","error_description":"` + ptRefresh + `"}`,
			[]string{ptRefresh}, "invalid_grant"},
		{"credential as the error code", 400, ptHeader(ptJSON),
			`{"error":"` + ptAccess + `","access_token":"` + ptAccess + `"}`,
			[]string{ptAccess}, "http_400"},
		{"credential as an upper-cased error code", 400, ptHeader(ptJSON),
			`{"error":"FAKE-ACCESS-TOKEN-0001","access_token":"` + ptAccess + `"}`,
			[]string{ptAccess, strings.ToUpper(ptAccess)}, "http_400"},
		{"credential in error_uri", 400, ptHeader(ptJSON),
			`{"error":"invalid_grant","error_uri":"https://example.invalid/?t=` + ptRefresh + `","refresh_token":"` + ptRefresh + `"}`,
			[]string{ptRefresh}, "invalid_grant"},
		{"credential with a control character", 400, ptHeader(ptJSON),
			`{"error":"invalid_grant","error_description":"x fake-refresh\ttoken-0002 y","refresh_token":"fake-refresh\ttoken-0002"}`,
			[]string{"fake-refresh\ttoken-0002", "fake-refresh token-0002"}, "invalid_grant"},
		{"client_secret and id_token echoed", 400, ptHeader(ptJSON),
			`{"error":"invalid_client","error_description":"secret fake-client-secret-1 with fake.id.token.value","client_secret":"fake-client-secret-1","id_token":"fake.id.token.value"}`,
			[]string{"fake-client-secret-1", "fake.id.token.value"}, "invalid_client"},
		{"credential spread over code and description", 400, ptHeader(ptJSON),
			`{"error":"foo_bar","error_description":"secret-tail and more","refresh_token":"foo_bar (HTTP 400): secret-tail"}`,
			[]string{"foo_bar (HTTP 400): secret-tail"}, "foo_bar"},
		{"credential spread over op and code", 400, ptHeader(ptJSON),
			`{"error":"foo_bar","refresh_token":"n: foo_bar (HTTP"}`,
			[]string{"n: foo_bar (HTTP"}, "http_400"},
		{"credential straddling the 512-byte cut", 400, ptHeader(ptJSON),
			`{"error":"invalid_grant","error_description":"` + strings.Repeat("a", maxDescriptionBytes-10) + ptRefresh + `","refresh_token":"` + ptRefresh + `"}`,
			[]string{ptRefresh, ptRefresh[:10]}, "invalid_grant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, oe := parseExactlyOne(t, tt.status, tt.header, tt.body, ParseOptions{})
			if oe.Code != tt.code {
				t.Errorf("Code = %q, want %q", oe.Code, tt.code)
			}
			for i, s := range tt.secrets {
				for name, text := range map[string]string{"Error()": oe.Error(), "Code": oe.Code, "Description": oe.Description, "URI": oe.URI, "%+v": fmt.Sprintf("%+v", oe)} {
					if strings.Contains(strings.ToLower(text), strings.ToLower(s)) {
						t.Errorf("%s contains secret #%d", name, i)
					}
				}
			}
		})
	}
	t.Run("the message survives redaction", func(t *testing.T) {
		_, oe := parseExactlyOne(t, 400, ptHeader(ptJSON), tests[0].body, ParseOptions{})
		if !strings.Contains(oe.Description, "[redacted]") || !strings.Contains(oe.Description, "is revoked") {
			t.Errorf("Description %q: want the text with the credential replaced", oe.Description)
		}
	})
}

func TestParseErrorDescriptionSanitized(t *testing.T) {
	tests := []struct {
		name   string
		header http.Header
		body   string
		want   string // exact Description
	}{
		{"control characters and new lines", ptHeader(ptJSON), `{"error":"invalid_grant","error_description":"line one\nline two\r\n\u001b[31mred\u0000end"}`,
			"line one line two [31mred end"},
		{"bidi override and zero-width", ptHeader(ptJSON), `{"error":"invalid_grant","error_description":"abc\u202edef\u200bghi"}`,
			"abc def ghi"},
		{"C1 control", ptHeader(ptJSON), `{"error":"invalid_grant","error_description":"a\u0085b"}`, "a b"},
		{"invalid UTF-8 in a form", ptHeader(ptForm), "error=invalid_grant&error_description=a%FFb", "a\uFFFDb"},
		{"runs of white space", ptHeader(ptJSON), `{"error":"invalid_grant","error_description":"  a \t\t b  "}`, "a b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oe := ParseErrorResponse("refresh", 400, tt.header, []byte(tt.body), parseNow)
			if oe.Description != tt.want {
				t.Errorf("Description = %q, want %q", oe.Description, tt.want)
			}
		})
	}
	t.Run("long text is truncated on a rune boundary", func(t *testing.T) {
		long := strings.Repeat("é", 5000)
		oe := ParseErrorResponse("refresh", 400, ptHeader(ptJSON), []byte(`{"error":"invalid_grant","error_description":"`+long+`"}`), parseNow)
		if n := len(oe.Description); n > maxDescriptionBytes || n < maxDescriptionBytes-8 {
			t.Errorf("Description is %d bytes, want just under %d", n, maxDescriptionBytes)
		}
		if !utf8.ValidString(oe.Description) || !strings.HasSuffix(oe.Description, "…") {
			t.Errorf("Description not valid UTF-8 or not marked as cut")
		}
	})
	t.Run("no byte below 0x20 anywhere in Error()", func(t *testing.T) {
		oe := ParseErrorResponse("refresh", 400, ptHeader(ptJSON), []byte(`{"error":{"type":"a\nb","code":"x\ty","message":"m\u0000"}}`), parseNow)
		msg := oe.Error()
		for i := 0; i < len(msg); i++ {
			if msg[i] < 0x20 || msg[i] == 0x7f {
				t.Fatalf("Error() has control byte %#x at %d", msg[i], i)
			}
		}
	})
	t.Run("long provider code goes to the description", func(t *testing.T) {
		code := strings.Repeat("x", maxCodeBytes+1)
		oe := ParseErrorResponse("refresh", 400, ptHeader(ptJSON), []byte(`{"error":"`+code+`"}`), parseNow)
		if oe.Code != "http_400" || len(oe.Description) > maxCodeBytes {
			t.Errorf("Code = %q, Description %d bytes", oe.Code, len(oe.Description))
		}
	})
}

func TestParseErrorResponseOps(t *testing.T) {
	for _, op := range []string{"introspect", "revoke", "discovery"} {
		oe := ParseErrorResponse(op, 401, ptHeader(ptJSON), []byte(`{"error":"invalid_client"}`), parseNow)
		if oe.Op != op || !strings.HasPrefix(oe.Error(), "oauth: "+op+": invalid_client (HTTP 401)") {
			t.Errorf("op %s: Error() = %q", op, oe.Error())
		}
	}
	if oe := ParseErrorResponse("", 500, nil, nil, parseNow); oe.Op != "token" || oe.Code != "http_500" {
		t.Errorf("default op: %+v", oe)
	}
	if _, err := ParseTokenResponse(500, nil, nil, ParseOptions{Now: parseNow}); err == nil || !strings.HasPrefix(err.Error(), "oauth: token: http_500") {
		t.Errorf("ParseTokenResponse default op: %v", err)
	}
	// ParseErrorResponse on a 2xx (a revocation endpoint's odd answer).
	oe := ParseErrorResponse("revoke", 200, ptHeader(ptJSON), []byte(`{"error":"unsupported_token_type"}`), parseNow)
	if oe.Code != "unsupported_token_type" || oe.Kind != KindTransient {
		t.Errorf("2xx with error: %+v", oe)
	}
	if oe := ParseErrorResponse("revoke", 200, nil, nil, parseNow); oe.Code != CodeInvalidResponse {
		t.Errorf("2xx without error: code %q", oe.Code)
	}
}

func TestParseTokenResponseZeroNow(t *testing.T) {
	tok, err := ParseTokenResponse(200, ptHeader(ptJSON), []byte(`{"access_token":"`+ptAccess+`","expires_in":3600}`), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Dated now rather than in year 1; the exact instant is not asserted.
	if tok.IssuedAt.Year() < 2000 || tok.Expiry.Sub(tok.IssuedAt) != time.Hour {
		t.Errorf("IssuedAt %v Expiry %v", tok.IssuedAt, tok.Expiry)
	}
}

func TestParseRetryAfter(t *testing.T) {
	date := func(d time.Duration, layout string) string { return parseNow.Add(d).Format(layout) }
	tests := []struct {
		name  string
		value []string // nil: header absent
		now   time.Time
		want  time.Duration
	}{
		{"absent", nil, parseNow, 0},
		{"seconds", []string{"120"}, parseNow, 2 * time.Minute},
		{"seconds with white space", []string{" 120 "}, parseNow, 2 * time.Minute},
		{"zero", []string{"0"}, parseNow, 0},
		{"negative", []string{"-5"}, parseNow, 0},
		{"fraction", []string{"1.5"}, parseNow, 0},
		{"plus sign", []string{"+5"}, parseNow, 0},
		{"garbage", []string{"soon"}, parseNow, 0},
		{"empty", []string{""}, parseNow, 0},
		{"exactly the cap", []string{"3600"}, parseNow, time.Hour},
		{"over the cap", []string{"7200"}, parseNow, time.Hour},
		{"overflowing digits", []string{"99999999999999999999999999"}, parseNow, time.Hour},
		{"IMF-fixdate", []string{date(90*time.Second, http.TimeFormat)}, parseNow, 90 * time.Second},
		{"RFC 850 date", []string{date(2*time.Minute, "Monday, 02-Jan-06 15:04:05 GMT")}, parseNow, 2 * time.Minute},
		{"asctime date", []string{date(3*time.Minute, time.ANSIC)}, parseNow, 3 * time.Minute},
		{"date in the past", []string{date(-time.Minute, http.TimeFormat)}, parseNow, 0},
		{"date far ahead", []string{date(48*time.Hour, http.TimeFormat)}, parseNow, time.Hour},
		{"date with zero now", []string{date(time.Minute, http.TimeFormat)}, time.Time{}, 0},
		{"seconds with zero now", []string{"30"}, time.Time{}, 30 * time.Second},
		{"first of several values", []string{"10", "20"}, parseNow, 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.value {
				h.Add("Retry-After", v)
			}
			if got := parseRetryAfter(h, tt.now); got != tt.want {
				t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.value, got, tt.want)
			}
		})
	}
	if got := parseRetryAfter(nil, parseNow); got != 0 {
		t.Errorf("nil header: %v", got)
	}
}

func TestNetworkError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		is   error
	}{
		{"canceled", context.Canceled, context.Canceled},
		{"deadline", fmt.Errorf("dial: %w", context.DeadlineExceeded), context.DeadlineExceeded},
		{"url.Error around a deadline", &url.Error{Op: "Post", URL: "https://login.example.invalid/token", Err: context.DeadlineExceeded}, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NetworkError("refresh", tt.err)
			if e.Code != CodeNetwork || e.Kind != KindTransient || e.StatusCode != 0 || e.Op != "refresh" {
				t.Errorf("got %+v", e)
			}
			if !errors.Is(e, tt.is) || !errors.Is(e, ErrTransient) || errors.Is(e, ErrReauthRequired) {
				t.Errorf("errors.Is: cause %t transient %t reauth %t", errors.Is(e, tt.is), errors.Is(e, ErrTransient), errors.Is(e, ErrReauthRequired))
			}
			if !strings.HasPrefix(e.Error(), "oauth: refresh: network: ") {
				t.Errorf("Error() = %q", e.Error())
			}
		})
	}
	t.Run("URL query and user info dropped from the message", func(t *testing.T) {
		cause := errors.New("connection reset by peer")
		ue := &url.Error{Op: "Post", URL: "https://user:fake-password-1@login.example.invalid/token?client_secret=fake-client-secret-1#frag", Err: cause}
		e := NetworkError("refresh", ue)
		msg := e.Error()
		if strings.Contains(msg, "fake-client-secret-1") || strings.Contains(msg, "fake-password-1") || strings.Contains(msg, "frag") {
			t.Error("Error() carries the URL's query or user info")
		}
		if !strings.Contains(msg, "login.example.invalid/token") || !errors.Is(e, cause) {
			t.Errorf("Error() = %q, cause kept %t", msg, errors.Is(e, cause))
		}
		var got *url.Error
		if !errors.As(e, &got) || got.Op != "Post" {
			t.Error("the *url.Error is no longer reachable with errors.As")
		}
	})
	t.Run("nil cause", func(t *testing.T) {
		if e := NetworkError("", nil); e.Error() != "oauth: token: network" {
			t.Errorf("Error() = %q", e.Error())
		}
	})
}
