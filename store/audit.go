package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// AuditEntry is one line of the audit trail: who did what to which
// connection, when, and how it ended. It never holds a token, a key secret
// or a request body; see docs/security.md.
type AuditEntry struct {
	// ID is assigned by the store, increasing in insertion order.
	ID   int64
	Time time.Time
	// Actor is who acted: an API key's name, "dashboard:" and the key name
	// of a dashboard session, or "system" for the broker's own work.
	Actor string
	// ActorID is the API key's id, when a key acted.
	ActorID string
	// Action is what was done: token.read, proxy, refresh, connect,
	// connection.import, connection.delete, apikey.create, …
	Action       string
	ConnectionID string
	// Outcome is "ok" or the error code answered.
	Outcome string
	// Detail adds what the action needs, such as a proxied call's method,
	// path template and status.
	Detail string
}

// AuditFilter selects audit entries. Zero fields do not filter.
type AuditFilter struct {
	ConnectionID string
	Actor        string
	Action       string
	Since        time.Time // inclusive
	Until        time.Time // exclusive
	// BeforeID pages back: only entries with a smaller ID.
	BeforeID int64
	// Limit is at most MaxAuditLimit; 0 means DefaultAuditLimit.
	Limit int
}

const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 1000
	// maxAuditField bounds every text field of an entry.
	maxAuditField = 1024
)

// AuditLog keeps the audit trail. Backends write entries in batches: the
// server queues them off the request path (package audit).
type AuditLog interface {
	// AppendAudit stores entries in one transaction, all or none. A zero
	// Time is set to the store's now; IDs are assigned by the store.
	AppendAudit(ctx context.Context, entries []AuditEntry) error
	// ListAudit returns matching entries, newest first.
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error)
	// PruneAudit deletes entries older than before and returns how many.
	PruneAudit(ctx context.Context, before time.Time) (int64, error)
}

// Validate checks the entry's fields before it is stored.
func (e AuditEntry) Validate() error {
	if e.Action == "" {
		return errors.New("audit entry: action is empty")
	}
	for _, f := range []struct{ name, v string }{
		{"actor", e.Actor}, {"actor_id", e.ActorID}, {"action", e.Action},
		{"connection_id", e.ConnectionID}, {"outcome", e.Outcome}, {"detail", e.Detail},
	} {
		if len(f.v) > maxAuditField {
			return fmt.Errorf("audit entry: %s is longer than %d bytes", f.name, maxAuditField)
		}
	}
	return nil
}

// AuditLimit checks a filter's limit and applies the default.
func AuditLimit(limit int) (int, error) {
	switch {
	case limit < 0:
		return 0, fmt.Errorf("audit: limit %d is negative", limit)
	case limit == 0:
		return DefaultAuditLimit, nil
	case limit > MaxAuditLimit:
		return 0, fmt.Errorf("audit: limit %d is above %d", limit, MaxAuditLimit)
	}
	return limit, nil
}
