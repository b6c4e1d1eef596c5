package remote

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Operations of key management and the audit trail (admin keys;
// docs/security.md).
var (
	opListAudit    = op{"listAudit", http.MethodGet, "/v1/audit", true}
	opCreateAPIKey = op{"createAPIKey", http.MethodPost, "/v1/api-keys", false}
	opListAPIKeys  = op{"listAPIKeys", http.MethodGet, "/v1/api-keys", true}
	opRevokeAPIKey = op{"revokeAPIKey", http.MethodDelete, "/v1/api-keys/{key}", true}
)

// AuditEntry is one entry of the audit trail. It never holds a token.
type AuditEntry struct {
	ID           int64     `json:"id"`
	Time         time.Time `json:"time"`
	Actor        string    `json:"actor"`
	ActorID      string    `json:"actor_id,omitempty"`
	Action       string    `json:"action"`
	ConnectionID string    `json:"connection_id,omitempty"`
	Outcome      string    `json:"outcome"`
	Detail       string    `json:"detail,omitempty"`
}

// AuditOptions filters [Client.ListAudit]; zero fields do not filter.
type AuditOptions struct {
	ConnectionID, Actor, Action string
	Since, Until                time.Time
	// Before pages back: NextBefore of the previous page.
	Before int64
	Limit  int
}

// AuditPage is one page of the trail, newest first.
type AuditPage struct {
	Entries    []AuditEntry `json:"entries"`
	NextBefore int64        `json:"next_before,omitempty"`
}

// ListAudit reads the audit trail (GET /v1/audit).
func (c *Client) ListAudit(ctx context.Context, o AuditOptions) (*AuditPage, error) {
	q := url.Values{}
	for k, v := range map[string]string{"connection_id": o.ConnectionID, "actor": o.Actor, "action": o.Action} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !o.Since.IsZero() {
		q.Set("since", o.Since.UTC().Format(time.RFC3339Nano))
	}
	if !o.Until.IsZero() {
		q.Set("until", o.Until.UTC().Format(time.RFC3339Nano))
	}
	if o.Before > 0 {
		q.Set("before", strconv.FormatInt(o.Before, 10))
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	var out AuditPage
	return &out, c.call(ctx, opListAudit, nil, q, nil, &out)
}

// APIKeyRequest creates a key: a role (admin, tokens, proxy, connect) and
// optionally the connections it may touch.
type APIKeyRequest struct {
	Name  string `json:"name"`
	Scope string `json:"scope"`
	// Connections are connection-id patterns ('*' matches any characters);
	// empty: every connection.
	Connections []string `json:"connections,omitempty"`
	// Providers; empty: every provider.
	Providers []string `json:"providers,omitempty"`
}

// APIKey is a key as the server shows it. Key, the secret, is set only in
// the answer to its creation.
type APIKey struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Scope       string     `json:"scope"`
	Connections []string   `json:"connections"`
	Providers   []string   `json:"providers"`
	CreatedAt   time.Time  `json:"created_at"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
	Key         string     `json:"key,omitempty"`
}

// String leaves the secret out, so a logged key shows no secret.
func (k APIKey) String() string {
	return "APIKey{" + k.ID + " " + k.Name + " " + k.Scope + "}"
}

// CreateAPIKey creates a key (POST /v1/api-keys); the answer carries its
// secret, shown this once.
func (c *Client) CreateAPIKey(ctx context.Context, in APIKeyRequest) (*APIKey, error) {
	var out APIKey
	return &out, c.call(ctx, opCreateAPIKey, nil, nil, in, &out)
}

// ListAPIKeys lists every key, revoked ones included, never a secret (GET
// /v1/api-keys).
func (c *Client) ListAPIKeys(ctx context.Context) ([]APIKey, error) {
	var out struct {
		Keys []APIKey `json:"keys"`
	}
	if err := c.call(ctx, opListAPIKeys, nil, nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Keys, nil
}

// RevokeAPIKey revokes a key (DELETE /v1/api-keys/{key}). Errors:
// [ErrNotFound].
func (c *Client) RevokeAPIKey(ctx context.Context, id string) error {
	return c.call(ctx, opRevokeAPIKey, []string{id}, nil, nil, nil)
}
