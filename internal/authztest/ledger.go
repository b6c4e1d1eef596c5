package authztest

import "context"

// GrantOf returns the grant (fosite's request ID, shared by every token
// of one authorization) that issued token, an access or refresh token, even
// if it has since been rotated or revoked. ok is false for a token this
// server never issued.
func (s *Server) GrantOf(token string) (grant string, ok bool) {
	ctx := context.Background()
	s.store.mu.Lock()
	defer s.store.mu.Unlock()
	if g, ok := s.store.issued[s.strategy.AccessTokenSignature(ctx, token)]; ok {
		return g, true
	}
	g, ok := s.store.issued[s.strategy.RefreshTokenSignature(ctx, token)]
	return g, ok
}

// IsLiveRefresh reports whether token is a refresh token of this server
// that has been neither used nor revoked: the newest of its grant, the one
// a client must hold to keep the grant alive.
func (s *Server) IsLiveRefresh(token string) bool {
	sig := s.strategy.RefreshTokenSignature(context.Background(), token)
	s.store.mu.Lock()
	defer s.store.mu.Unlock()
	e, ok := s.store.refresh[sig]
	return ok && !e.revoked && e.usedAt.IsZero()
}

// Refreshes counts the refresh tokens grant has issued after its first:
// how many refreshes the provider has answered for it.
func (s *Server) Refreshes(grant string) int {
	s.store.mu.Lock()
	defer s.store.mu.Unlock()
	g, ok := s.store.grants[grant]
	if !ok || len(g.refresh) == 0 {
		return 0
	}
	return len(g.refresh) - 1
}
