package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/tokenbroker/tokenbroker/audit"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/scheduler"
	"github.com/tokenbroker/tokenbroker/server"
	"github.com/tokenbroker/tokenbroker/server/ui"
	"github.com/tokenbroker/tokenbroker/store"
)

// certCheckInterval spaces the looks at the TLS files for a renewal.
const certCheckInterval = 10 * time.Second

// newAudit builds the audit recorder of the config's audit: section; nil
// when the trail is disabled. The returned closer ends a stream file.
func newAudit(cfg *config.Config, st store.Backend, log *slog.Logger, now func() time.Time) (*audit.Recorder, io.Closer, error) {
	if cfg.Audit.Disabled {
		return nil, nil, nil
	}
	opts := audit.Options{Store: st, Retention: cfg.Audit.Retention, Logger: log, Now: now}
	var closer io.Closer
	switch cfg.Audit.Stream {
	case "":
	case "stdout":
		opts.Stream = os.Stdout
	default:
		f, err := os.OpenFile(cfg.Audit.Stream, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("audit.stream: %w", err)
		}
		opts.Stream, closer = f, f
	}
	r, err := audit.New(opts)
	if err != nil {
		if closer != nil {
			closer.Close()
		}
		return nil, nil, err
	}
	return r, closer, nil
}

// auditEvent records the broker's own lifecycle events that no API call
// caused: background refreshes that failed, needed a person, or recovered.
func (a *App) auditEvent(e broker.Event) {
	if a.Audit == nil {
		return
	}
	switch e.Type {
	case broker.EventRefreshFailed, broker.EventReauthRequired, broker.EventRecovered:
		outcome := "ok"
		switch {
		case e.Type == broker.EventRecovered:
		case e.Code != "":
			outcome = e.Code
		default:
			outcome = e.Type
		}
		a.Audit.Record(store.AuditEntry{Time: e.At, Actor: "system", Action: server.ActionRefresh,
			ConnectionID: e.ConnectionID, Outcome: outcome, Detail: e.Type})
	}
}

// scheduledRefresher is what the scheduler refreshes through: the broker,
// with each scheduled refresh that succeeds recorded in the audit trail as
// the scheduler's (failures are recorded from the events they emit).
func (a *App) scheduledRefresher() scheduler.Refresher {
	if a.Audit == nil {
		return a.Broker
	}
	return auditedRefresher{broker: a.Broker, audit: a.Audit}
}

type auditedRefresher struct {
	broker *broker.Broker
	audit  *audit.Recorder
}

func (r auditedRefresher) RefreshIfDue(ctx context.Context, id string) error {
	err := r.broker.RefreshIfDue(ctx, id)
	if err == nil {
		r.audit.Record(store.AuditEntry{Actor: "scheduler", Action: server.ActionRefresh,
			ConnectionID: id, Outcome: "ok", Detail: "scheduled"})
	}
	return err
}

// followKeys drops the server's cached API keys whenever another replica
// revokes one, on stores that announce it (PostgreSQL); elsewhere the key
// cache's TTL bounds how long a revoked key keeps working.
func (a *App) followKeys(ctx context.Context) {
	feed, ok := a.Store.(store.KeyFeed)
	if !ok {
		return
	}
	feed.FollowKeyChanges(ctx, func(string) { a.Server.ForgetKeys() }, a.Server.ForgetKeys)
}

// tlsConfig is the TLS configuration of tls_cert_file/tls_key_file, or
// nil when serve does not terminate TLS.
func (a *App) tlsConfig() (*tls.Config, error) {
	if a.Config.TLSCertFile == "" {
		return nil, nil
	}
	certs, err := server.NewCertReloader(a.Config.TLSCertFile, a.Config.TLSKeyFile, certCheckInterval, a.log)
	if err != nil {
		return nil, err
	}
	return certs.TLSConfig(), nil
}

// auditor is the server's audit sink: the recorder, or none.
func (a *App) auditor() server.Auditor {
	if a.Audit == nil {
		return nil
	}
	return a.Audit
}

func (a *App) uiAuditor() ui.Auditor {
	if a.Audit == nil {
		return nil
	}
	return a.Audit
}

// allowHeaders is the allow_response_headers of the named provider.
func allowHeaders(cfg *config.Config, name string) []string {
	for _, p := range cfg.Providers {
		if p.Name == name {
			return p.AllowResponseHeaders
		}
	}
	return nil
}

// makeKey is server.NewAPIKey for the dashboard.
func makeKey(name, role string, connections, providers []string, now time.Time) (string, store.APIKey, error) {
	return server.NewAPIKey(server.KeySpec{Name: name, Role: role, Connections: connections, Providers: providers}, now)
}

// fdReserve is what the connection cap leaves of the file-descriptor limit
// for the database, the provider calls, the log and the listener itself.
const fdReserve = 128

// maxConnections is the configured cap, lowered below the process's
// file-descriptor limit: a cap above it would let a flood of clients use
// up the descriptors, and then the server could accept nothing, health
// checks included (docs/security.md).
func (a *App) maxConnections() int {
	n := a.Config.Security.MaxConnections
	if lim := fdLimit(); lim > 0 && n > lim-fdReserve {
		lowered := max(lim-fdReserve, lim/2)
		a.log.Warn("security.max_connections lowered below the open-file limit", "configured", n, "limit", lim, "max_connections", lowered)
		n = lowered
	}
	return n
}
