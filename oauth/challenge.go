package oauth

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Error codes of a Bearer challenge (RFC 6750 §3.1).
const (
	// ChallengeInvalidToken: the access token is expired, revoked or
	// otherwise invalid. A refresh may fix it.
	ChallengeInvalidToken = "invalid_token"
	// ChallengeInsufficientScope: the token is valid but lacks the scope the
	// resource needs. A refresh will not fix it; a person must consent to
	// more (a step-up).
	ChallengeInsufficientScope = "insufficient_scope"
	// ChallengeInvalidRequest: the request itself is malformed.
	ChallengeInvalidRequest = "invalid_request"
)

// BearerChallenge is the Bearer challenge of a WWW-Authenticate header
// (RFC 6750 §3), with the parameters RFC 9728 §5.1 adds.
type BearerChallenge struct {
	Realm            string
	Scope            string // the scope the resource needs, space separated
	Error            string // see the Challenge constants; empty when none
	ErrorDescription string
	ErrorURI         string
	// ResourceMetadata is the URL of the resource's protected resource
	// metadata (RFC 9728 §5.1).
	ResourceMetadata string
	// Params holds every parameter of the challenge, names in lower case.
	Params map[string]string
}

// ParseBearerChallenge finds the Bearer challenge among the WWW-Authenticate
// values of h (there may be several headers, each with several challenges,
// RFC 9110 §11.6.1) and parses its parameters. Scheme and parameter names
// are matched without regard to case; values may be tokens or quoted
// strings. It reports false when there is no Bearer challenge.
func ParseBearerChallenge(h http.Header) (BearerChallenge, bool) {
	for _, v := range h.Values("WWW-Authenticate") {
		for _, c := range parseChallenges(v) {
			if !strings.EqualFold(c.scheme, "Bearer") {
				continue
			}
			bc := BearerChallenge{Params: c.params}
			bc.Realm = c.params["realm"]
			bc.Scope = c.params["scope"]
			bc.Error = c.params["error"]
			bc.ErrorDescription = c.params["error_description"]
			bc.ErrorURI = c.params["error_uri"]
			bc.ResourceMetadata = c.params["resource_metadata"]
			return bc, true
		}
	}
	return BearerChallenge{}, false
}

type challenge struct {
	scheme string
	params map[string]string
}

// parseChallenges parses one WWW-Authenticate field value:
//
//	challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//	auth-param = token BWS "=" BWS ( token / quoted-string )
//
// It is lenient where servers are sloppy (missing commas, stray spaces) and
// stops at the first thing it cannot read, keeping what it has.
func parseChallenges(v string) []challenge {
	var out []challenge
	p := &lexer{s: v}
	for {
		p.skip(", \t")
		if p.done() {
			return out
		}
		scheme := p.token()
		if scheme == "" {
			return out
		}
		c := challenge{scheme: scheme, params: map[string]string{}}
		for {
			p.skip(", \t")
			save := p.i
			name := p.token()
			p.skip(" \t")
			if name == "" || !p.eat('=') {
				// The next challenge's scheme (or something unreadable,
				// which ends the outer loop).
				p.i = save
				break
			}
			p.skip(" \t")
			var val string
			switch p.peek() {
			case '"':
				val = p.quoted()
			case '=', ',', 0:
				// A token68 ("abc=="), which Bearer does not use.
				p.skip("=")
				continue
			default:
				val = p.token()
			}
			if _, dup := c.params[strings.ToLower(name)]; !dup {
				c.params[strings.ToLower(name)] = val
			}
		}
		out = append(out, c)
	}
}

type lexer struct {
	s string
	i int
}

func (l *lexer) done() bool { return l.i >= len(l.s) }

func (l *lexer) peek() byte {
	if l.done() {
		return 0
	}
	return l.s[l.i]
}

func (l *lexer) eat(b byte) bool {
	if l.peek() == b && !l.done() {
		l.i++
		return true
	}
	return false
}

func (l *lexer) skip(set string) {
	for !l.done() && strings.IndexByte(set, l.s[l.i]) >= 0 {
		l.i++
	}
}

// token reads an RFC 9110 token (tchar+).
func (l *lexer) token() string {
	start := l.i
	for !l.done() && isTchar(l.s[l.i]) {
		l.i++
	}
	return l.s[start:l.i]
}

// quoted reads a quoted-string, undoing quoted-pairs.
func (l *lexer) quoted() string {
	l.i++ // opening quote
	var b strings.Builder
	for !l.done() {
		c := l.s[l.i]
		l.i++
		switch c {
		case '"':
			return b.String()
		case '\\':
			if !l.done() {
				b.WriteByte(l.s[l.i])
				l.i++
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// ErrInsufficientScope matches (with [errors.Is]) an [*InsufficientScopeError].
var ErrInsufficientScope = errors.New("oauth: insufficient scope; a person must consent to more")

// InsufficientScopeError is a resource's answer that the token lacks scope
// (RFC 6750 §3.1, insufficient_scope): a step-up. Refreshing the token will
// not help; a person must authorize the scope the resource names.
type InsufficientScopeError struct {
	StatusCode int             // usually 403
	Challenge  BearerChallenge // Scope names what the resource needs
}

func (e *InsufficientScopeError) Error() string {
	msg := fmt.Sprintf("oauth: the resource answered HTTP %d insufficient_scope", e.StatusCode)
	if e.Challenge.Scope != "" {
		msg += "; it needs scope " + fmt.Sprintf("%q", e.Challenge.Scope)
	}
	return msg
}

// Is makes errors.Is(err, ErrInsufficientScope) true.
func (e *InsufficientScopeError) Is(target error) bool { return target == ErrInsufficientScope }
