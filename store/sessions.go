package store

import (
	"context"
	"time"
)

// UISession is a signed-in dashboard session, kept server-side so that
// signing out ends it everywhere, also for a copied cookie.
type UISession struct {
	// ID is the SHA-256 (hex) of the random part of the session cookie;
	// the cookie itself is never stored.
	ID        string
	KeyID     string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Sessions keeps dashboard sessions.
type Sessions interface {
	// CreateUISession stores s. Returns ErrAlreadyExists if the id is taken.
	CreateUISession(ctx context.Context, s UISession) error
	// GetUISession returns ErrNotFound for unknown, ended or expired
	// sessions.
	GetUISession(ctx context.Context, id string) (UISession, error)
	// DeleteUISession ends one session; ending an unknown one is not an
	// error.
	DeleteUISession(ctx context.Context, id string) error
	// DeleteKeyUISessions ends every session signed in with the key and
	// returns how many there were.
	DeleteKeyUISessions(ctx context.Context, keyID string) (int64, error)
	// PruneUISessions deletes sessions that expired before now.
	PruneUISessions(ctx context.Context) (int64, error)
}

// KeyFeed announces API key changes (revocations) made by any process, so
// every replica can drop cached keys at once. The PostgreSQL backend has
// one; on SQLite a replica relies on its key cache's TTL.
type KeyFeed interface {
	// FollowKeyChanges calls changed with the id of every API key updated
	// by any process, and lost whenever announcements may have been missed
	// (the caller then drops everything it cached), until ctx ends. Every
	// change committed after a call to lost is announced: lost is called
	// once listening has begun, and again after every reconnection. It
	// reconnects by itself and returns when ctx is done.
	FollowKeyChanges(ctx context.Context, changed func(keyID string), lost func())
}
