package oauth

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

var tokNow = time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)

func TestTokenValid(t *testing.T) {
	const window = 5 * time.Minute
	tests := []struct {
		name string
		tok  *Token
		want bool
	}{
		{"nil", nil, false},
		{"no access token", &Token{Expiry: tokNow.Add(time.Hour)}, false},
		{"unknown expiry", &Token{AccessToken: "fake-at"}, true},
		{"expires after the window", &Token{AccessToken: "fake-at", Expiry: tokNow.Add(window + time.Second)}, true},
		{"expires exactly at the window's end", &Token{AccessToken: "fake-at", Expiry: tokNow.Add(window)}, false},
		{"expires within the window", &Token{AccessToken: "fake-at", Expiry: tokNow.Add(time.Minute)}, false},
		{"expired", &Token{AccessToken: "fake-at", Expiry: tokNow.Add(-time.Second)}, false},
		{"expired, refresh token alive", &Token{AccessToken: "fake-at", RefreshToken: "fake-rt", Expiry: tokNow.Add(-time.Hour)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.tok.Valid(tokNow, window); got != tt.want {
				t.Errorf("Valid = %t, want %t", got, tt.want)
			}
		})
	}
	if !(&Token{AccessToken: "fake-at", Expiry: tokNow.Add(time.Second)}).Valid(tokNow, 0) {
		t.Error("zero window: a token with a second left is not valid")
	}
}

func TestTokenExpired(t *testing.T) {
	tests := []struct {
		name string
		tok  *Token
		want bool
	}{
		{"nil", nil, false},
		{"unknown expiry is not expired", &Token{AccessToken: "fake-at"}, false},
		{"before expiry", &Token{Expiry: tokNow.Add(time.Nanosecond)}, false},
		{"at expiry", &Token{Expiry: tokNow}, true},
		{"after expiry", &Token{Expiry: tokNow.Add(-time.Nanosecond)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.tok.Expired(tokNow); got != tt.want {
				t.Errorf("Expired = %t, want %t", got, tt.want)
			}
		})
	}
}

func TestTokenCanRefresh(t *testing.T) {
	tests := []struct {
		name string
		tok  *Token
		want bool
	}{
		{"nil", nil, false},
		{"no refresh token", &Token{AccessToken: "fake-at"}, false},
		{"refresh token, lifetimes unknown", &Token{RefreshToken: "fake-rt"}, true},
		{"access token expired, refresh token alive", &Token{RefreshToken: "fake-rt", Expiry: tokNow.Add(-24 * time.Hour), RefreshExpiry: tokNow.Add(time.Hour)}, true},
		{"refresh token expires exactly now", &Token{RefreshToken: "fake-rt", RefreshExpiry: tokNow}, false},
		{"refresh token expired", &Token{RefreshToken: "fake-rt", RefreshExpiry: tokNow.Add(-time.Second)}, false},
		{"hard expiry passed", &Token{RefreshToken: "fake-rt", RefreshExpiry: tokNow.Add(time.Hour), RefreshHardExpiry: tokNow.Add(-time.Second)}, false},
		{"hard expiry ahead", &Token{RefreshToken: "fake-rt", RefreshHardExpiry: tokNow.Add(time.Second)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.tok.CanRefresh(tokNow); got != tt.want {
				t.Errorf("CanRefresh = %t, want %t", got, tt.want)
			}
		})
	}
}

func TestTokenClone(t *testing.T) {
	if (*Token)(nil).Clone() != nil {
		t.Error("Clone of nil is not nil")
	}
	orig := &Token{AccessToken: "fake-at-1", RefreshToken: "fake-rt-1", Expiry: tokNow, Scope: "a"}
	c := orig.Clone()
	if c == orig || c.AccessToken != orig.AccessToken || !c.Expiry.Equal(orig.Expiry) || c.Scope != orig.Scope {
		t.Fatal("Clone is not an equal, separate copy")
	}
	c.AccessToken, c.Scope = "fake-at-2", "b"
	if orig.AccessToken != "fake-at-1" || orig.Scope != "a" {
		t.Error("changing the clone changed the original")
	}
}

// Secrets must not leak through any way a Token is commonly printed or
// logged: as a pointer, as a value, inside other values.
func TestTokenRedaction(t *testing.T) {
	const (
		at = "fake-access-SECRET-1"
		rt = "fake-refresh-SECRET-1"
	)
	tok := Token{AccessToken: at, RefreshToken: rt, TokenType: "Bearer", Expiry: tokNow, Scope: "read"}
	type holder struct {
		Name string
		Tok  Token
		Ptr  *Token
	}
	values := map[string]any{
		"pointer":        &tok,
		"value":          tok,
		"struct field":   holder{Name: "c1", Tok: tok, Ptr: &tok},
		"pointer struct": &holder{Tok: tok},
		"slice":          []Token{tok},
		"pointer slice":  []*Token{&tok},
		"map":            map[string]Token{"k": tok},
	}
	leaks := func(s string) bool { return strings.Contains(s, at) || strings.Contains(s, rt) }
	for name, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			if leaks(fmt.Sprintf(verb, v)) {
				t.Errorf("%s printed with %s leaks a secret", name, verb)
			}
		}
		for _, handler := range []string{"json", "text"} {
			if handler == "json" && name != "pointer" && name != "value" {
				// slog's JSON handler resolves LogValuer only for the
				// attribute itself; a Token nested in another value goes
				// through encoding/json, which Token does not redact
				// (callers persist tokens as JSON). Log the Token itself.
				continue
			}
			var buf bytes.Buffer
			var h slog.Handler = slog.NewJSONHandler(&buf, nil)
			if handler == "text" {
				h = slog.NewTextHandler(&buf, nil)
			}
			slog.New(h).Info("refreshed", "token", v, slog.Group("g", "t", v))
			if leaks(buf.String()) {
				t.Errorf("%s logged by the %s handler leaks a secret", name, handler)
			}
			if buf.Len() == 0 {
				t.Errorf("%s: nothing logged", name)
			}
		}
	}

	// What remains is useful.
	s := tok.String()
	for _, want := range []string{"type=Bearer", "access=<redacted>", "refresh=<redacted>", "expiry=2026-05-06T07:08:09Z"} {
		if !strings.Contains(s, want) {
			t.Errorf("String() = %q lacks %q", s, want)
		}
	}
	if s := (Token{AccessToken: at}).String(); !strings.Contains(s, "refresh=<none>") {
		t.Errorf("String() = %q: a missing refresh token should read <none>", s)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "token", &tok)
	for _, want := range []string{`"access_token":"<redacted>"`, `"refresh_token":"<redacted>"`, `"type":"Bearer"`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("JSON log %q lacks %q", buf.String(), want)
		}
	}
	// A nil *Token prints as <nil> and does not break a log line.
	if got := fmt.Sprintf("%v", (*Token)(nil)); got != "<nil>" {
		t.Errorf("nil token prints as %q", got)
	}
	buf.Reset()
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "token", (*Token)(nil), "after", "still here")
	if !strings.Contains(buf.String(), "still here") {
		t.Errorf("logging a nil token lost the line: %q", buf.String())
	}
}
