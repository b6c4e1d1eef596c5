package server

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/tokenbroker/tokenbroker/store"
)

// Roles a key may have beside ScopeAdmin and ScopeTokens (auth.go). What
// each may call is the route table's business (server.go); which
// connections it may touch is its [KeySpec]'s (docs/security.md).
const (
	// ScopeProxy may read a connection's status and call its provider
	// through the proxy; it never sees a raw token. The least-privilege
	// role for services that only call an API.
	ScopeProxy = "proxy"
	// ScopeConnect may create connect sessions (links through which a
	// person grants access) for connections in its patterns.
	ScopeConnect = "connect"
)

// Roles lists every key role, for help texts and validation.
var Roles = []string{ScopeAdmin, ScopeTokens, ScopeProxy, ScopeConnect}

func validRole(r string) bool { return slices.Contains(Roles, r) }

// KeySpec describes a key to create with [NewAPIKey].
type KeySpec struct {
	Name string
	// Role is one of [Roles].
	Role string
	// Connections are connection-id patterns: letters, digits, . _ : @ -
	// and '*' (any run of characters), such as "team-a-*". Empty: every
	// connection.
	Connections []string
	// Providers are provider names. Empty: every provider.
	Providers []string
}

// keyPattern is a connection id (broker.ValidID) with '*' wildcards.
var keyPattern = regexp.MustCompile(`^[A-Za-z0-9*][A-Za-z0-9._:@*-]{0,199}$`)

// providerName is what config accepts as a provider name.
var providerName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// maxKeyPatterns bounds the patterns and providers of one key.
const maxKeyPatterns = 100

// checkKeySpec validates a key's role and connection scope.
func checkKeySpec(spec KeySpec) error {
	if !validRole(spec.Role) {
		return fmt.Errorf("server: API key scope %q is not one of %s", spec.Role, strings.Join(Roles, ", "))
	}
	if spec.Role == ScopeAdmin && (len(spec.Connections) > 0 || len(spec.Providers) > 0) {
		return errors.New("server: admin keys cannot be limited to connections or providers (they manage keys and every connection); use the tokens, proxy or connect scope")
	}
	if len(spec.Connections) > maxKeyPatterns || len(spec.Providers) > maxKeyPatterns {
		return fmt.Errorf("server: an API key takes at most %d connection patterns and %d providers", maxKeyPatterns, maxKeyPatterns)
	}
	for _, p := range spec.Connections {
		if !keyPattern.MatchString(p) {
			return fmt.Errorf("server: connection pattern %q: use 1-200 letters, digits, . _ : @ - and * (any characters)", p)
		}
	}
	for _, p := range spec.Providers {
		if !providerName.MatchString(p) {
			return fmt.Errorf("server: provider %q is not a provider name", p)
		}
	}
	return nil
}

// scoped reports whether k is limited to some connections.
func scoped(k store.APIKey) bool { return len(k.Connections) > 0 || len(k.Providers) > 0 }

// idInScope reports whether connection id matches one of k's patterns (or
// k has none).
func idInScope(k store.APIKey, id string) bool {
	if len(k.Connections) == 0 {
		return true
	}
	for _, p := range k.Connections {
		if matchPattern(p, id) {
			return true
		}
	}
	return false
}

// providerInScope reports whether k may touch provider's connections.
func providerInScope(k store.APIKey, provider string) bool {
	return len(k.Providers) == 0 || slices.Contains(k.Providers, provider)
}

// matchPattern matches s against p, where '*' stands for any run of
// characters (none included) and everything else for itself.
func matchPattern(p, s string) bool {
	parts := strings.Split(p, "*")
	if len(parts) == 1 {
		return p == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(s, mid)
		if i < 0 {
			return false
		}
		s = s[i+len(mid):]
	}
	return strings.HasSuffix(s, last)
}

// errOutOfScope is answered exactly as a missing connection is, so a key
// cannot learn which connections exist outside its scope.
var errOutOfScope = fmt.Errorf("server: connection outside the key's scope: %w", store.ErrNotFound)

// checkScope decides whether the request's key may touch connection id.
// A key limited by provider costs one connection read, which is how the
// provider is learnt; a key limited by id patterns only costs none.
func (s *Server) checkScope(ctx context.Context, k store.APIKey, id string) error {
	if !scoped(k) {
		return nil
	}
	if !idInScope(k, id) {
		return errOutOfScope
	}
	if len(k.Providers) == 0 {
		return nil
	}
	c, err := s.broker.GetConnection(ctx, id)
	if err != nil {
		return err
	}
	if !providerInScope(k, c.Provider) {
		return errOutOfScope
	}
	return nil
}

// checkNewScope decides whether the key may create (or connect) connection
// id of provider, which need not exist yet.
func checkNewScope(k store.APIKey, id, provider string) error {
	if !idInScope(k, id) || !providerInScope(k, provider) {
		return errOutOfScope
	}
	return nil
}
