package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/app"
	"github.com/tokenbroker/tokenbroker/internal/tracing"
)

func init() { registerCommand(newServeCmd) }

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		// Durations as "1.5s", not as a count of nanoseconds: log
		// pipelines and people read the same thing the text format shows.
		opts.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindDuration {
				a.Value = slog.StringValue(a.Value.Duration().String())
			}
			return a
		}
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func newServeCmd(c *cli) *cobra.Command {
	var listen, database string
	migrate := true
	var demoMode bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "run the server",
		Long: `Run the tokenbroker server.

With no --config it listens on 127.0.0.1:8080, keeps its data in
./tokenbroker-data and prints a bootstrap admin API key on first start, once
the listener is bound and the database migrated.`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Flags win over the environment, which wins over the file;
			// everything is checked in one pass.
			flags := map[string]string{}
			if listen != "" {
				flags[config.EnvName("listen")] = listen
			}
			if database != "" {
				flags[config.EnvName("database")] = database
			}
			if _, set := os.LookupEnv(config.EnvName("data_dir")); demoMode && c.configPath == "" && !set {
				flags[config.EnvName("data_dir")] = demoDataDir
			}
			cfg, err := config.ReadEnv(c.configPath, func(k string) (string, bool) {
				if v, ok := flags[k]; ok {
					return v, true
				}
				return os.LookupEnv(k)
			})
			if err != nil {
				return err
			}
			return serve(cmd.Context(), c, cfg, serveOptions{migrate: migrate, demo: demoMode})
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "address to listen on (overrides listen:)")
	cmd.Flags().StringVar(&database, "database", "", "database DSN (overrides database:)")
	cmd.Flags().BoolVar(&demoMode, "demo", false, "also run the built-in sandbox provider \"demo\" at /demo/ to try tokenbroker without registering an OAuth app (loopback only; data in "+demoDataDir+")")
	cmd.Flags().BoolVar(&migrate, "migrate", true, "apply pending schema migrations on start; with --migrate=false, refuse to start on a schema that is behind (run `tokenbroker migrate up` first)")
	return cmd
}

type serveOptions struct {
	migrate bool
	// ready, if not nil, receives the bound address (tests).
	ready chan<- net.Addr
	demo  bool
}

func serve(ctx context.Context, c *cli, cfg *config.Config, opts serveOptions) error {
	log := newLogger(cfg, c.stderr)
	if opts.demo {
		if err := checkDemoListen(cfg.Listen); err != nil {
			return err
		}
	}
	if err := app.EnsureDataDir(cfg.DataDir); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("%w (another process has the port? choose another with --listen or TOKENBROKER_LISTEN)", err)
	}
	defer ln.Close()
	if strings.HasSuffix(cfg.PublicURL, ":0") {
		// Listening on port 0: the default public URL names the port
		// the system chose.
		cfg.PublicURL = "http://" + ln.Addr().String()
	}
	var wrap func(http.Handler) http.Handler
	if opts.demo {
		sb, err := setupDemo(cfg, ln.Addr())
		if err != nil {
			return err
		}
		wrap = mountDemo(sb)
		log.Warn("DEMO MODE: the sandbox provider \"demo\" is enabled; never use --demo for real connections", "sandbox", cfg.PublicURL+demoPrefix+"/")
	}
	tp, stopTracing, err := tracing.Setup(ctx, os.Getenv, versionString())
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := stopTracing(sctx); err != nil {
			log.Warn("flushing traces failed", "error", err)
		}
	}()
	if tp != nil {
		log.Info("tracing on: exporting spans over OTLP/HTTP as the OTEL_* variables say")
	}
	a, err := app.New(ctx, cfg, app.Options{Logger: log, SkipMigrate: !opts.migrate, TracerProvider: tp})
	if err != nil {
		return err
	}
	defer a.Close()
	// Only now, with the database migrated and the port ours, is the
	// bootstrap key created and shown: a start that fails earlier leaves
	// no key behind that nobody saw.
	if opts.demo {
		demoBanner(c.stdout, cfg)
	}
	if _, err := a.BootstrapAPIKey(ctx, c.stdout, time.Now()); err != nil {
		return err
	}
	// SIGHUP re-reads the key file, so a key added by `keys rotate`
	// becomes the primary without a restart.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			if err := a.Keys.Reload(); err != nil {
				log.Error("reloading the key file failed", "error", err)
			} else {
				log.Info("key file reloaded", "primary_key", a.Keys.PrimaryID())
			}
		}
	}()
	// The first SIGINT/SIGTERM cancels ctx (main); a second one, while
	// the server drains, ends the shutdown at once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	force := make(chan struct{})
	served := make(chan struct{})
	defer close(served)
	go func() {
		for n := 0; ; {
			select {
			case <-sigs:
				if n++; n == 2 {
					close(force)
					return
				}
			case <-served:
				return
			}
		}
	}()
	return a.ServeGraceful(ctx, ln, app.ServeOptions{Ready: opts.ready, Force: force, Wrap: wrap})
}
