package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/tokenbroker/tokenbroker/store"
)

// Reseal re-encrypts every stored token under the sealer's primary key, so
// that after a key rotation the old key can be retired. Each row is
// rewritten with a compare-and-swap; a row that changes meanwhile is re-read
// and done again. It returns how many rows it rewrote.
func (b *Broker) Reseal(ctx context.Context) (int, error) {
	n := 0
	after := ""
	for {
		page, err := b.store.ListConnections(ctx, store.ListOptions{After: after, Limit: 500})
		if err != nil {
			return n, err
		}
		for _, c := range page.Connections {
			err := b.resealOne(ctx, c.ID)
			switch {
			case err == nil:
				n++
			case errors.Is(err, store.ErrNotFound):
				// Deleted meanwhile: nothing to reseal.
			default:
				return n, fmt.Errorf("broker: reseal connection %q: %w", c.ID, err)
			}
		}
		if page.NextAfter == "" {
			m, err := b.resealMCPRegistrations(ctx)
			return n + m, err
		}
		after = page.NextAfter
	}
}

func (b *Broker) resealOne(ctx context.Context, id string) error {
	_, err := store.Update(ctx, b.store, id, func(old store.Connection) (store.Connection, []store.Event, error) {
		for _, f := range []struct {
			name string
			val  *[]byte
		}{{"access", &old.AccessToken}, {"refresh", &old.RefreshToken}} {
			plain, err := b.open(old.ID, f.name, *f.val)
			if err != nil {
				return old, nil, err
			}
			if *f.val, err = b.seal(old.ID, f.name, plain); err != nil {
				return old, nil, err
			}
		}
		return old, nil, nil
	})
	return err
}

// resealMCPRegistrations re-encrypts the MCP client secrets (broker/mcp.go)
// under the primary key, when the store keeps registrations. A
// registration replaced meanwhile was sealed under the primary key already
// and is left alone.
func (b *Broker) resealMCPRegistrations(ctx context.Context) (int, error) {
	regs, ok := b.store.(store.MCPRegistrations)
	if !ok {
		return 0, nil
	}
	list, err := regs.ListMCPRegistrations(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range list {
		if len(r.ClientSecret) == 0 {
			continue
		}
		plain, err := b.sealer.Open(r.ClientSecret, registrationAAD(r.Issuer))
		if err != nil {
			return n, fmt.Errorf("broker: reseal MCP client secret of %s: %w", r.Issuer, err)
		}
		sealed, err := b.sealer.Seal(plain, registrationAAD(r.Issuer))
		if err != nil {
			return n, fmt.Errorf("broker: reseal MCP client secret of %s: %w", r.Issuer, err)
		}
		switch err := regs.ResealMCPRegistration(ctx, r.Issuer, r.ClientID, sealed); {
		case err == nil:
			n++
		case errors.Is(err, store.ErrNotFound):
		default:
			return n, fmt.Errorf("broker: reseal MCP client secret of %s: %w", r.Issuer, err)
		}
	}
	return n, nil
}
