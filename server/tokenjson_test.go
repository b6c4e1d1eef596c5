package server

import (
	"encoding/json"
	"testing"
	"time"
)

// TestAppendTokenView holds the hand-written encoder of the token answer
// to encoding/json's bytes, and checks that it declines what it cannot
// write the same way.
func TestAppendTokenView(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)
	far := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	secs := int64(3599)
	zero := int64(0)
	cases := []struct {
		v     tokenView
		plain bool
	}{
		{tokenView{AccessToken: "ya29.a0AfH6SM-_~+/=", TokenType: "Bearer", ExpiresAt: &at, ExpiresIn: &secs}, true},
		{tokenView{AccessToken: "abc", TokenType: "Bearer"}, true},
		{tokenView{AccessToken: "abc", TokenType: "bearer", ExpiresAt: &at, ExpiresIn: &zero}, true},
		{tokenView{AccessToken: "", TokenType: "", ExpiresAt: &at}, true},
		{tokenView{AccessToken: `a"b`, TokenType: "Bearer"}, false},
		{tokenView{AccessToken: `a\b`, TokenType: "Bearer"}, false},
		{tokenView{AccessToken: "a<b>&c", TokenType: "Bearer"}, false},
		{tokenView{AccessToken: "tab\there", TokenType: "Bearer"}, false},
		{tokenView{AccessToken: "é", TokenType: "Bearer"}, false},
		{tokenView{AccessToken: "a\u2028b", TokenType: "Bearer"}, false},
		{tokenView{AccessToken: "abc", TokenType: "Bea\x7fr"}, false},
		{tokenView{AccessToken: "abc", TokenType: "Bearer", ExpiresAt: &far}, false},
	}
	for _, c := range cases {
		want, err := json.Marshal(&c.v)
		if err != nil && c.plain {
			t.Fatalf("json.Marshal(%+v): %v", c.v, err)
		}
		got, ok := appendTokenView(nil, &c.v)
		if ok != c.plain {
			t.Errorf("appendTokenView(%q, %q): plain = %v, want %v", c.v.AccessToken, c.v.TokenType, ok, c.plain)
			continue
		}
		if ok && string(got) != string(want) {
			t.Errorf("appendTokenView = %s, want %s", got, want)
		}
		body, err := encodeTokenView(&c.v)
		if err == nil && string(body) != string(want)+"\n" {
			t.Errorf("encodeTokenView = %q, want %q", body, string(want)+"\n")
		}
	}
}
