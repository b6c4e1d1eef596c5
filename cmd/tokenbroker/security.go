package main

// The CLI pieces of scoped keys and the audit trail (docs/security.md).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenbroker/tokenbroker/server"
	"github.com/tokenbroker/tokenbroker/store"
)

func init() {
	registerCommand(newAuditCmd)
}

// cliActor is the audit actor of administrative commands, which run with
// database access rather than a key.
const cliActor = "cli"

// Help texts of apikey create's scope flags.
const (
	connectionsHelp = "comma-separated connection-id patterns the key may touch, * matching any characters (default: every connection)"
	providersHelp   = "comma-separated providers whose connections the key may touch (default: every provider)"
	roleHelp        = "admin (everything), tokens (token, proxy and status), proxy (proxy and status, never a raw token) or connect (connect links)"
)

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// keySpec is the key apikey create's flags describe.
func keySpec(name, role, connections, providers string) server.KeySpec {
	return server.KeySpec{Name: name, Role: role, Connections: splitList(connections), Providers: splitList(providers)}
}

// scopeText describes a key's connection scope for listings.
func scopeText(k store.APIKey) string {
	if len(k.Connections) == 0 && len(k.Providers) == 0 {
		return "*"
	}
	var parts []string
	if len(k.Connections) > 0 {
		parts = append(parts, "connections="+strings.Join(k.Connections, ","))
	}
	if len(k.Providers) > 0 {
		parts = append(parts, "providers="+strings.Join(k.Providers, ","))
	}
	return strings.Join(parts, " ")
}

// auditKeyChange records a key's creation or revocation in the trail. It
// is written at once: the command is about to exit.
func auditKeyChange(ctx context.Context, st store.AuditLog, action string, k store.APIKey) error {
	detail := "key=" + k.ID
	if action == "apikey.create" {
		detail += " name=" + truncate(k.Name, 200) + " role=" + k.Scope + " scope=" + scopeText(k)
	}
	return st.AppendAudit(ctx, []store.AuditEntry{{
		Time: time.Now().UTC(), Actor: cliActor, Action: action, Outcome: "ok", Detail: truncate(detail, 1000),
	}})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// revokeKey revokes a key, ends the dashboard sessions signed in with it
// and records both.
func revokeKey(ctx context.Context, st store.Backend, id string) error {
	if err := st.RevokeAPIKey(ctx, id); err != nil {
		return fmt.Errorf("apikey revoke %s: %w", id, err)
	}
	if _, err := st.DeleteKeyUISessions(ctx, id); err != nil {
		return fmt.Errorf("apikey revoke %s: the key is revoked, but its dashboard sessions could not be ended (they end at their next request anyway): %w", id, err)
	}
	return auditKeyChange(ctx, st, "apikey.revoke", store.APIKey{ID: id})
}

// auditQuery is what `tokenbroker audit` asks for.
type auditQuery struct {
	connection, actor, action string
	since                     time.Duration
	limit                     int
}

func newAuditCmd(c *cli) *cobra.Command {
	var q auditQuery
	cmd := &cobra.Command{
		Use:   "audit [--connection ID] [--actor NAME] [--action ACTION] [--since 24h] [--limit N]",
		Short: "who read which token, proxied which call, refreshed, imported, deleted, connected; newest first",
		Long: `List the audit trail from the database (docs/security.md). It never holds
token values, key secrets or bodies. --output json prints one entry per line.`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAudit(cmd.Context(), c.configPath, q, c.asJSON(), c.stdout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.connection, "connection", "", "only this connection's entries")
	f.StringVar(&q.actor, "actor", "", "only this actor (a key name, dashboard:NAME, cli, system)")
	f.StringVar(&q.action, "action", "", "only this action (token.read, proxy, refresh, connection.delete, …)")
	f.DurationVar(&q.since, "since", 0, "only entries from this long ago, such as 24h (default: all)")
	f.IntVar(&q.limit, "limit", 100, "at most this many entries, newest first (1-1000)")
	return cmd
}

// runAudit lists the audit trail from the database, newest first.
func runAudit(ctx context.Context, cfgPath string, q auditQuery, asJSON bool, stdout io.Writer) error {
	if q.limit < 1 || q.limit > store.MaxAuditLimit {
		return usageErr("audit: --limit must be between 1 and %d", store.MaxAuditLimit)
	}
	f := store.AuditFilter{ConnectionID: q.connection, Actor: q.actor, Action: q.action, Limit: q.limit}
	if q.since > 0 {
		f.Since = time.Now().Add(-q.since)
	}
	st, err := openStore(ctx, cfgPath)
	if err != nil {
		return err
	}
	defer st.Close()
	entries, err := st.ListAudit(ctx, f)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		for _, e := range entries {
			if err := enc.Encode(map[string]any{
				"id": e.ID, "time": e.Time.UTC(), "actor": e.Actor, "actor_id": e.ActorID, "action": e.Action,
				"connection_id": e.ConnectionID, "outcome": e.Outcome, "detail": e.Detail,
			}); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tACTOR\tACTION\tCONNECTION\tOUTCOME\tDETAIL")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339), orDashCLI(e.Actor), e.Action,
			orDashCLI(e.ConnectionID), e.Outcome, e.Detail)
	}
	return tw.Flush()
}

func orDashCLI(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
