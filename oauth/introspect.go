package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ErrNoIntrospection is returned by [Endpoint.Introspect] when no
// introspection endpoint is configured or published by the issuer.
var ErrNoIntrospection = errors.New("oauth: introspect: no introspection endpoint configured or discovered")

// Introspection is an authorization server's account of a token (RFC 7662
// §2.2). For an inactive token only Active is set: the server says nothing
// else about it, and nothing else should be believed.
type Introspection struct {
	// Active is whether the token is currently usable.
	Active bool
	// Exp is when the token expires; zero when not said. This is how
	// tokenbroker learns the lifetime of a token issued without expires_in.
	Exp time.Time
	// IssuedAt and NotBefore are iat and nbf; zero when not said.
	IssuedAt, NotBefore time.Time
	// Scope is the space-separated scope.
	Scope string
	// ClientID is the client the token was issued to.
	ClientID string
	// Username is the human-readable resource owner, when given.
	Username string
	// TokenType is the token's type ("Bearer"), when given.
	TokenType string
	// Subject, Issuer and JTI are sub, iss and jti.
	Subject, Issuer, JTI string
	// Audience is aud, a single string or a list on the wire.
	Audience []string
}

// Introspect asks the introspection endpoint about token (RFC 7662 §2.1),
// authenticating as the client the same way as at the token endpoint. hint
// is the token_type_hint ("access_token" or "refresh_token"), sent when not
// empty. It returns [ErrNoIntrospection] when there is no endpoint to ask,
// and an [*Error] with Op "introspect" when the server fails or answers with
// something that is not an introspection response. Transient failures are
// retried like token requests; introspection changes nothing, so that is
// always safe.
func (e *Endpoint) Introspect(ctx context.Context, token, hint string) (*Introspection, error) {
	const op = "introspect"
	if token == "" {
		return nil, errors.New("oauth: introspect: token is empty")
	}
	endpointURL, err := e.resolve(ctx, e.cfg.IntrospectionURL, func(m *Metadata) string { return m.IntrospectionEndpoint })
	if err != nil {
		return nil, err
	}
	if endpointURL == "" {
		return nil, ErrNoIntrospection
	}
	form := url.Values{"token": {token}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	var result *Introspection
	err = e.call(ctx, op, endpointURL, form, func(status int, header http.Header, body []byte) error {
		if status != http.StatusOK {
			return ParseErrorResponse(op, status, header, body, e.now())
		}
		in, err := parseIntrospection(body)
		if err != nil {
			return &Error{Op: op, StatusCode: status, Code: CodeInvalidResponse, Kind: KindTransient,
				Description: err.Error()}
		}
		result = in
		return nil
	})
	if err != nil {
		return nil, err
	}
	return result, nil
}

// introspectionDocument is the wire form of RFC 7662 §2.2. Fields that
// providers are known to spell in more than one way are decoded leniently.
type introspectionDocument struct {
	Active    json.RawMessage `json:"active"`
	Scope     lenientList     `json:"scope"`
	ClientID  string          `json:"client_id"`
	Username  string          `json:"username"`
	TokenType string          `json:"token_type"`
	Exp       json.RawMessage `json:"exp"`
	Iat       json.RawMessage `json:"iat"`
	Nbf       json.RawMessage `json:"nbf"`
	Sub       string          `json:"sub"`
	Aud       lenientList     `json:"aud"`
	Iss       string          `json:"iss"`
	Jti       string          `json:"jti"`
}

// parseIntrospection reads an introspection response. Its errors describe
// the shape of the answer, never its values.
func parseIntrospection(body []byte) (*Introspection, error) {
	var doc introspectionDocument
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&doc); err != nil {
		return nil, errors.New("introspection response is not a JSON object")
	}
	active, err := introspectionActive(doc.Active)
	if err != nil {
		return nil, err
	}
	if !active {
		return &Introspection{}, nil
	}
	in := &Introspection{
		Active:    true,
		Scope:     strings.Join(doc.Scope, " "),
		ClientID:  doc.ClientID,
		Username:  doc.Username,
		TokenType: doc.TokenType,
		Subject:   doc.Sub,
		Issuer:    doc.Iss,
		JTI:       doc.Jti,
		Audience:  doc.Aud,
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		dst  *time.Time
	}{{"exp", doc.Exp, &in.Exp}, {"iat", doc.Iat, &in.IssuedAt}, {"nbf", doc.Nbf, &in.NotBefore}} {
		if *f.dst, err = introspectionTime(f.raw); err != nil {
			return nil, fmt.Errorf("introspection response field %s: %w", f.name, err)
		}
	}
	return in, nil
}

// introspectionActive reads the REQUIRED active member: a JSON boolean, or
// the string spelling of one that some servers send.
func introspectionActive(raw json.RawMessage) (bool, error) {
	switch strings.TrimSpace(string(raw)) {
	case "true", `"true"`:
		return true, nil
	case "false", `"false"`:
		return false, nil
	case "", "null":
		return false, errors.New("introspection response has no active member")
	}
	return false, errors.New("introspection response member active is not a boolean")
}

// maxNumericDate is the start of year 10000: later dates are garbage.
const maxNumericDate = 253402300800

// introspectionTime reads a NumericDate (RFC 7519 §2: seconds since the
// epoch, possibly fractional), also accepted as a numeric string. Absent,
// null and 0 mean not said.
func introspectionTime(raw json.RawMessage) (time.Time, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return time.Time{}, nil
	}
	if unq, err := strconv.Unquote(s); err == nil {
		s = unq
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return time.Time{}, errors.New("not a number of seconds")
	}
	if f < 0 || f >= maxNumericDate {
		return time.Time{}, errors.New("out of range")
	}
	if f == 0 {
		return time.Time{}, nil
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}
