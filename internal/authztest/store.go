package authztest

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/pkce"
)

// store is fosite's storage for one Server.
//
// It replaces fosite's storage.MemoryStore for two reasons: MemoryStore's
// RevokeRefreshToken writes its token map under the wrong mutex (a data race
// as soon as a revocation meets a concurrent read), and it remembers only the
// newest token of each grant, so it cannot revoke a grant that has several
// live tokens, which the reuse grace window produces.
//
// Tokens are keyed by their HMAC signature, as fosite hands them over; the
// token values themselves never reach the store.
type store struct {
	grace time.Duration // see Options.ReuseGrace

	mu      sync.Mutex
	clients map[string]fosite.Client
	codes   map[string]*codeEntry
	pkce    map[string]fosite.Requester
	access  map[string]fosite.Requester
	refresh map[string]*refreshEntry
	grants  map[string]*grantEntry // by request ID, shared by every token of one grant
	// issued remembers the grant of every access and refresh token ever
	// issued (by signature), also after rotation or revocation forgot the
	// token: tests ask which grant a token they were handed belongs to.
	issued map[string]string

	reuseDetected atomic.Int64
	graceReuses   atomic.Int64
}

type codeEntry struct {
	req  fosite.Requester
	used bool
}

type refreshEntry struct {
	req       fosite.Requester
	accessSig string    // the access token issued together with this refresh token
	usedAt    time.Time // first rotation; zero while unused
	revoked   bool
}

type grantEntry struct {
	access  map[string]struct{}
	refresh map[string]struct{}
}

var (
	_ fosite.Storage                = (*store)(nil)
	_ oauth2.CoreStorage            = (*store)(nil)
	_ oauth2.TokenRevocationStorage = (*store)(nil)
	_ pkce.PKCERequestStorage       = (*store)(nil)
)

func newStore(grace time.Duration) *store {
	return &store{
		grace:   grace,
		clients: map[string]fosite.Client{},
		codes:   map[string]*codeEntry{},
		pkce:    map[string]fosite.Requester{},
		access:  map[string]fosite.Requester{},
		refresh: map[string]*refreshEntry{},
		grants:  map[string]*grantEntry{},
		issued:  map[string]string{},
	}
}

// grant returns the grant entry for a request ID, creating it. Caller holds mu.
func (s *store) grant(requestID string) *grantEntry {
	g, ok := s.grants[requestID]
	if !ok {
		g = &grantEntry{access: map[string]struct{}{}, refresh: map[string]struct{}{}}
		s.grants[requestID] = g
	}
	return g
}

// inGrace reports whether a used refresh token may still be replayed. Caller holds mu.
func (s *store) inGrace(e *refreshEntry) bool {
	return s.grace > 0 && !e.usedAt.IsZero() && time.Since(e.usedAt) <= s.grace
}

func (s *store) setClient(c fosite.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[c.GetID()] = c
}

// addRedirectURI registers one more redirect URI for a client. The client is
// copied, not changed in place, because fosite may hold the old value.
func (s *store) addRedirectURI(clientID, uri string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch c := s.clients[clientID].(type) {
	case *fosite.DefaultClient:
		cp := *c
		cp.RedirectURIs = append(slices.Clone(c.RedirectURIs), uri)
		s.clients[clientID] = &cp
	case *fosite.DefaultOpenIDConnectClient:
		dc := *c.DefaultClient
		dc.RedirectURIs = append(slices.Clone(dc.RedirectURIs), uri)
		cp := *c
		cp.DefaultClient = &dc
		s.clients[clientID] = &cp
	default:
		return false
	}
	return true
}

// GetClient implements [fosite.ClientManager].
func (s *store) GetClient(_ context.Context, id string) (fosite.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	return c, nil
}

// ClientAssertionJWTValid implements [fosite.ClientManager]. The server
// offers no private_key_jwt client authentication, so no JTI is ever known.
func (s *store) ClientAssertionJWTValid(context.Context, string) error { return nil }

// SetClientAssertionJWT implements [fosite.ClientManager]; see ClientAssertionJWTValid.
func (s *store) SetClientAssertionJWT(context.Context, string, time.Time) error { return nil }

func (s *store) CreateAuthorizeCodeSession(_ context.Context, sig string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[sig] = &codeEntry{req: req}
	return nil
}

// GetAuthorizeCodeSession returns the request with ErrInvalidatedAuthorizeCode
// for a used code, so that fosite can revoke what the code issued
// (RFC 6749 §4.1.2).
func (s *store) GetAuthorizeCodeSession(_ context.Context, sig string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.codes[sig]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	if e.used {
		return e.req, fosite.ErrInvalidatedAuthorizeCode
	}
	return e.req, nil
}

func (s *store) InvalidateAuthorizeCodeSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.codes[sig]
	if !ok {
		return fosite.ErrNotFound
	}
	e.used = true
	return nil
}

func (s *store) CreatePKCERequestSession(_ context.Context, sig string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pkce[sig] = req
	return nil
}

func (s *store) GetPKCERequestSession(_ context.Context, sig string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	req, ok := s.pkce[sig]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	return req, nil
}

func (s *store) DeletePKCERequestSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pkce, sig)
	return nil
}

func (s *store) CreateAccessTokenSession(_ context.Context, sig string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.access[sig] = req
	s.grant(req.GetID()).access[sig] = struct{}{}
	s.issued[sig] = req.GetID()
	return nil
}

func (s *store) GetAccessTokenSession(_ context.Context, sig string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	req, ok := s.access[sig]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	return req, nil
}

func (s *store) DeleteAccessTokenSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleteAccess(sig)
	return nil
}

// deleteAccess forgets an access token. Caller holds mu.
func (s *store) deleteAccess(sig string) {
	if req, ok := s.access[sig]; ok {
		if g, ok := s.grants[req.GetID()]; ok {
			delete(g.access, sig)
		}
		delete(s.access, sig)
	}
}

func (s *store) CreateRefreshTokenSession(_ context.Context, sig, accessSig string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh[sig] = &refreshEntry{req: req, accessSig: accessSig}
	s.grant(req.GetID()).refresh[sig] = struct{}{}
	s.issued[sig] = req.GetID()
	return nil
}

// GetRefreshTokenSession returns ErrInactiveToken, with the request, for a
// revoked refresh token and for a used one outside the grace window; fosite's
// refresh handler takes that as reuse and revokes the grant.
func (s *store) GetRefreshTokenSession(_ context.Context, sig string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.refresh[sig]
	switch {
	case !ok:
		return nil, fosite.ErrNotFound
	case e.revoked:
		return e.req, fosite.ErrInactiveToken
	case e.usedAt.IsZero(), s.inGrace(e):
		return e.req, nil
	default:
		return e.req, fosite.ErrInactiveToken
	}
}

// DeleteRefreshTokenSession is called by fosite (v0.49) only when it has
// detected reuse of a refresh token, just before it revokes the grant. The
// entry is kept, marked revoked, so that every later replay of it is counted
// too.
func (s *store) DeleteRefreshTokenSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.refresh[sig]
	if !ok {
		return nil
	}
	if !e.usedAt.IsZero() {
		s.reuseDetected.Add(1)
	}
	e.revoked = true
	return nil
}

// RotateRefreshToken retires the refresh token being used, and the access
// token issued with it. A replay inside the grace window retires nothing:
// the tokens from the first use stay valid next to the new pair, as with
// ORY Hydra's graceful rotation.
func (s *store) RotateRefreshToken(_ context.Context, _ string, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.refresh[sig]
	switch {
	case !ok:
		return fosite.ErrNotFound
	case e.revoked:
		return fosite.ErrInactiveToken
	case e.usedAt.IsZero():
		e.usedAt = time.Now()
		s.deleteAccess(e.accessSig)
		return nil
	case s.inGrace(e):
		s.graceReuses.Add(1)
		return nil
	default:
		return fosite.ErrInactiveToken
	}
}

// RevokeRefreshToken revokes every refresh token of the grant (RFC 7009 §2.1).
func (s *store) RevokeRefreshToken(_ context.Context, requestID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g, ok := s.grants[requestID]; ok {
		for sig := range g.refresh {
			s.refresh[sig].revoked = true
		}
	}
	return nil
}

// RevokeAccessToken revokes every access token of the grant (RFC 7009 §2.1).
func (s *store) RevokeAccessToken(_ context.Context, requestID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g, ok := s.grants[requestID]; ok {
		for sig := range g.access {
			delete(s.access, sig)
		}
		clear(g.access)
	}
	return nil
}

// expire sets the expiry of the access token with signature accessSig, or
// else of the refresh token with signature refreshSig, to at. It reports
// whether it found either. The caller must keep fosite from running
// meanwhile, because fosite reads sessions without the store's lock.
func (s *store) expire(accessSig, refreshSig string, at time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if req, ok := s.access[accessSig]; ok {
		req.GetSession().SetExpiresAt(fosite.AccessToken, at)
		return true
	}
	if e, ok := s.refresh[refreshSig]; ok && !e.revoked {
		e.req.GetSession().SetExpiresAt(fosite.RefreshToken, at)
		return true
	}
	return false
}
