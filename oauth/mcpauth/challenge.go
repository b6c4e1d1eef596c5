package mcpauth

import (
	"net/http"
	"strings"
)

// Challenge is one authentication challenge of a WWW-Authenticate header
// (RFC 9110 §11.6.1), with its auth-params keyed by lower-case name.
type Challenge struct {
	Scheme string
	Params map[string]string
}

// Scopes returns the space-separated scope parameter as a list (RFC 6750
// §3).
func (c Challenge) Scopes() []string { return strings.Fields(c.Params["scope"]) }

// BearerChallenge returns the Bearer challenge of h's WWW-Authenticate
// headers, if there is one.
func BearerChallenge(h http.Header) (Challenge, bool) {
	for _, c := range ParseChallenges(h.Values("WWW-Authenticate")) {
		if strings.EqualFold(c.Scheme, "Bearer") {
			return c, true
		}
	}
	return Challenge{}, false
}

// ParseChallenges parses WWW-Authenticate header values. It is lenient:
// what it cannot parse it skips, since a challenge only ever adds hints.
func ParseChallenges(values []string) []Challenge {
	var out []Challenge
	for _, v := range values {
		s := v
		for {
			s = strings.TrimLeft(s, " \t,")
			if s == "" {
				break
			}
			// The scheme is a token up to white space or the end.
			i := strings.IndexAny(s, " \t,")
			if i < 0 {
				out = append(out, Challenge{Scheme: s, Params: map[string]string{}})
				break
			}
			c := Challenge{Scheme: s[:i], Params: map[string]string{}}
			s = s[i:]
			s = parseParams(s, c.Params)
			out = append(out, c)
		}
	}
	return out
}

// parseParams reads name=value pairs separated by commas until something
// that is not a pair (the next challenge's scheme) and returns the rest.
func parseParams(s string, into map[string]string) string {
	for {
		rest := strings.TrimLeft(s, " \t,")
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return rest
		}
		name := strings.TrimSpace(rest[:eq])
		if strings.ContainsAny(name, " \t,\"") {
			// "Basic realm=x": a new scheme followed by its params.
			return rest
		}
		val := strings.TrimLeft(rest[eq+1:], " \t")
		var value string
		if strings.HasPrefix(val, `"`) {
			var b strings.Builder
			j := 1
			for ; j < len(val); j++ {
				if val[j] == '\\' && j+1 < len(val) {
					j++
					b.WriteByte(val[j])
					continue
				}
				if val[j] == '"' {
					break
				}
				b.WriteByte(val[j])
			}
			value = b.String()
			if j < len(val) {
				j++
			}
			s = val[j:]
		} else {
			end := strings.IndexAny(val, ", \t")
			if end < 0 {
				end = len(val)
			}
			value, s = val[:end], val[end:]
		}
		into[strings.ToLower(name)] = value
	}
}
