package server

import (
	"encoding/json"
	"strconv"
	"time"
)

// appendTokenView appends v as encoding/json would encode it, byte for
// byte, without reflection: the token read is the hottest route and
// json.Marshal was about a tenth of its CPU (BENCHMARKS.md, "Allocations
// per request"). It reports false for anything outside the plain case
// (a string needing an escape, a year json refuses); the caller then uses
// json.Marshal. TestAppendTokenView holds it to json.Marshal's output.
func appendTokenView(b []byte, v *tokenView) ([]byte, bool) {
	var ok bool
	b = append(b, `{"access_token":`...)
	if b, ok = appendPlainString(b, v.AccessToken); !ok {
		return b, false
	}
	b = append(b, `,"token_type":`...)
	if b, ok = appendPlainString(b, v.TokenType); !ok {
		return b, false
	}
	b = append(b, `,"expires_at":`...)
	if v.ExpiresAt == nil {
		b = append(b, "null"...)
	} else {
		if y := v.ExpiresAt.Year(); y < 0 || y > 9999 {
			return b, false
		}
		b = append(b, '"')
		b = v.ExpiresAt.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	if v.ExpiresIn != nil {
		b = append(b, `,"expires_in":`...)
		b = strconv.AppendInt(b, *v.ExpiresIn, 10)
	}
	return append(b, '}'), true
}

// appendPlainString appends s quoted if no byte of it needs an escape in
// encoding/json's output (printable ASCII but '"', '\\' and the HTML
// characters it escapes).
func appendPlainString(b []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return b, false
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), true
}

// encodeTokenView is the body of a token answer, with its newline.
func encodeTokenView(v *tokenView) ([]byte, error) {
	if b, ok := appendTokenView(make([]byte, 0, 256), v); ok {
		return append(b, '\n'), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
