package oauth

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// AuthStyle is how a client authenticates to the token endpoint (and to the
// introspection and revocation endpoints, which use the same client
// credentials).
type AuthStyle int

const (
	// AuthStyleAuto tries [AuthStyleHeader] first and falls back to
	// [AuthStyleParams] once when the provider refuses the client, then
	// remembers whichever worked in an [AuthStyleCache].
	AuthStyleAuto AuthStyle = iota
	// AuthStyleHeader sends the client credentials as HTTP Basic
	// authentication (client_secret_basic), each half form-urlencoded first
	// as RFC 6749 §2.3.1 requires.
	AuthStyleHeader
	// AuthStyleParams sends client_id and client_secret as form fields in the
	// request body (client_secret_post, RFC 6749 §2.3.1).
	AuthStyleParams
)

// ParseAuthStyle parses a configured auth style: "auto", "header" or
// "params", or the RFC 7591 names "client_secret_basic" and
// "client_secret_post". Case is ignored; the empty string means
// [AuthStyleAuto].
func ParseAuthStyle(s string) (AuthStyle, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return AuthStyleAuto, nil
	case "header", "basic", "client_secret_basic":
		return AuthStyleHeader, nil
	case "params", "post", "client_secret_post":
		return AuthStyleParams, nil
	}
	return 0, fmt.Errorf("oauth: unknown auth style %q (want auto, header or params)", s)
}

// String returns the configuration name of the style.
func (s AuthStyle) String() string {
	switch s {
	case AuthStyleAuto:
		return "auto"
	case AuthStyleHeader:
		return "header"
	case AuthStyleParams:
		return "params"
	}
	return "AuthStyle(" + strconv.Itoa(int(s)) + ")"
}

// MarshalText implements [encoding.TextMarshaler], so configuration formats
// write the style by name.
func (s AuthStyle) MarshalText() ([]byte, error) {
	if !s.valid() {
		return nil, fmt.Errorf("oauth: invalid auth style %d", int(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText implements [encoding.TextUnmarshaler] with [ParseAuthStyle].
func (s *AuthStyle) UnmarshalText(text []byte) error {
	v, err := ParseAuthStyle(string(text))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

func (s AuthStyle) valid() bool { return s >= AuthStyleAuto && s <= AuthStyleParams }

// AuthStyleCache remembers which [AuthStyle] a provider accepted in
// [AuthStyleAuto] mode, so the fallback costs one extra request per process
// rather than one per refresh. The zero value is ready to use; it is safe
// for concurrent use and may be shared by several [Endpoint]s.
//
// Entries are keyed by endpoint URL and client ID: the accepted method is a
// property of the client's registration (RFC 7591 token_endpoint_auth_method),
// and two clients of one provider may be registered differently.
type AuthStyleCache struct {
	mu sync.RWMutex
	m  map[authStyleKey]AuthStyle
}

type authStyleKey struct{ url, clientID string }

// lookup returns the style that last worked for endpointURL and clientID.
func (c *AuthStyleCache) lookup(endpointURL, clientID string) (AuthStyle, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s, ok := c.m[authStyleKey{endpointURL, clientID}]
	return s, ok
}

// remember records that style worked for endpointURL and clientID.
func (c *AuthStyleCache) remember(endpointURL, clientID string, style AuthStyle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[authStyleKey]AuthStyle)
	}
	c.m[authStyleKey{endpointURL, clientID}] = style
}
