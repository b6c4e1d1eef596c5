package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/tokenbroker/tokenbroker/server"
)

// errDraining is what /readyz reports once shutdown has started.
var errDraining = errors.New("shutting down")

// ready is the /readyz check: failing as soon as shutdown starts, so load
// balancers stop sending traffic while in-flight requests finish, and
// otherwise whether the database answers.
func (a *App) ready(ctx context.Context) error {
	if a.draining.Load() {
		return errDraining
	}
	return a.Store.Ping(ctx)
}

// ServeOptions tune [App.ServeGraceful].
type ServeOptions struct {
	// Ready, if not nil, receives the bound address once serving.
	Ready chan<- net.Addr
	// Force, when closed during shutdown, ends it at once: the listener
	// and every connection are closed (a second SIGTERM/SIGINT).
	Force <-chan struct{}
	// Wrap, if not nil, wraps the server's handler (the demo sandbox
	// mounts itself this way).
	Wrap func(http.Handler) http.Handler
}

// Serve listens on the configured address and serves until ctx is
// cancelled, then shuts down gracefully. ready, if not nil, receives the
// bound address once listening (useful with port 0).
func (a *App) Serve(ctx context.Context, ready chan<- net.Addr) error {
	ln, err := net.Listen("tcp", a.Config.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return a.ServeListener(ctx, ln, ready)
}

// ServeListener serves on ln until ctx is cancelled, then shuts down
// gracefully ([App.ServeGraceful]).
func (a *App) ServeListener(ctx context.Context, ln net.Listener, ready chan<- net.Addr) error {
	return a.ServeGraceful(ctx, ln, ServeOptions{Ready: ready})
}

// ServeGraceful serves on ln until ctx is cancelled, then shuts down in
// order: /readyz fails at once; the listener stays open for
// shutdown.drain_delay so load balancers notice; then it closes and
// in-flight requests get up to shutdown.grace to finish. One summary line
// is logged. It returns nil after an orderly drain, and an error saying
// how many requests were cut off when the grace ran out or opts.Force
// closed.
func (a *App) ServeGraceful(ctx context.Context, ln net.Listener, opts ServeOptions) error {
	var inFlight, served atomic.Int64
	handler := a.Handler()
	if opts.Wrap != nil {
		handler = opts.Wrap(handler)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			inFlight.Add(1)
			defer func() { inFlight.Add(-1); served.Add(1) }()
			handler.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	// Body deadlines are set per request by the server (docs/security.md);
	// the cap keeps a flood from using up the file descriptors.
	tlsCfg, terr := a.tlsConfig()
	if terr != nil {
		return terr
	}
	srv.TLSConfig = tlsCfg
	ln = server.LimitListener(ln, a.maxConnections())
	followCtx, stopFollowing := context.WithCancel(context.Background())
	defer stopFollowing()
	go a.Broker.FollowChanges(followCtx)
	go a.Keys.Watch(followCtx, KeyFileWatchInterval)
	go a.followKeys(followCtx)
	if a.Audit != nil {
		// Stopped last (deferred first), so entries of the final requests
		// are written.
		auditDone := make(chan struct{})
		auditCtx, stopAudit := context.WithCancel(context.Background())
		go func() {
			defer close(auditDone)
			a.Audit.Run(auditCtx)
		}()
		defer func() { stopAudit(); <-auditDone }()
	}
	if a.Scheduler != nil {
		// The scheduler stops with the server; refreshes it started finish
		// (bounded by the refresh timeout) before ServeGraceful returns.
		schedDone := make(chan struct{})
		schedCtx, stopScheduler := context.WithCancel(context.Background())
		go func() {
			defer close(schedDone)
			_ = a.Scheduler.Run(schedCtx)
		}()
		defer func() { stopScheduler(); <-schedDone }()
	}
	if a.Webhooks != nil {
		// Deliveries in flight when the server stops are cut off; their
		// claims lapse and the next start (or another replica) sends them.
		hooksDone := make(chan struct{})
		hooksCtx, stopHooks := context.WithCancel(context.Background())
		go func() {
			defer close(hooksDone)
			_ = a.Webhooks.Run(hooksCtx)
		}()
		defer func() { stopHooks(); <-hooksDone }()
	}
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "") // the certificate comes from TLSConfig
			return
		}
		errc <- srv.Serve(ln)
	}()
	a.log.Info("tokenbroker listening", "addr", ln.Addr().String(), "database", redactDSN(a.Config.Database))
	if opts.Ready != nil {
		opts.Ready <- ln.Addr()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}

	sd := a.Config.Shutdown
	start := time.Now()
	a.draining.Store(true)
	a.log.Info("shutting down: /readyz now fails; a second signal forces the exit",
		"in_flight", inFlight.Load(), "drain_delay", sd.DrainDelay, "grace", sd.Grace)
	forced := func(stage string) error {
		n := inFlight.Load()
		_ = srv.Close()
		<-errc
		a.log.Warn("shutdown forced by a second signal", "stage", stage, "cut_off", n, "elapsed", time.Since(start).Round(time.Millisecond))
		return fmt.Errorf("shutdown forced by a second signal during the %s; %d requests were cut off", stage, n)
	}
	if sd.DrainDelay > 0 {
		t := time.NewTimer(sd.DrainDelay)
		select {
		case <-t.C:
		case <-opts.Force:
			t.Stop()
			return forced("drain delay")
		}
	}
	servedBefore := served.Load()
	graceCtx, cancel := context.WithTimeout(context.Background(), sd.Grace)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(graceCtx) }()
	var err error
	select {
	case err = <-done:
	case <-opts.Force:
		return forced("grace period")
	}
	if e := <-errc; e != nil && !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	finished := served.Load() - servedBefore
	if errors.Is(err, context.DeadlineExceeded) {
		n := inFlight.Load()
		_ = srv.Close()
		a.log.Warn("shutdown grace ran out", "finished", finished, "cut_off", n, "grace", sd.Grace)
		return fmt.Errorf("shutdown: shutdown.grace (%s) ran out with %d requests still running; they were cut off (raise shutdown.grace)", sd.Grace, n)
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	a.log.Info("shutdown complete", "finished_in_flight", finished, "served_total", served.Load(), "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}
