package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/app"
)

func init() { registerCommand(newServeCmd) }

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func newServeCmd(c *cli) *cobra.Command {
	var listen, database string
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
			cfg, err := config.ReadEnv(c.configPath, func(k string) (string, bool) {
				if v, ok := flags[k]; ok {
					return v, true
				}
				return os.LookupEnv(k)
			})
			if err != nil {
				return err
			}
			return serve(cmd.Context(), c, cfg)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "address to listen on (overrides listen:)")
	cmd.Flags().StringVar(&database, "database", "", "database DSN (overrides database:)")
	return cmd
}

func serve(ctx context.Context, c *cli, cfg *config.Config) error {
	log := newLogger(cfg, c.stderr)
	if err := app.EnsureDataDir(cfg.DataDir); err != nil {
		return err
	}
	a, err := app.New(ctx, cfg, app.Options{Logger: log})
	if err != nil {
		return err
	}
	defer a.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	// Only now, with the database migrated and the port ours, is the
	// bootstrap key created and shown: a start that fails earlier leaves
	// no key behind that nobody saw.
	if _, err := a.BootstrapAPIKey(ctx, c.stdout, time.Now()); err != nil {
		ln.Close()
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
	return a.ServeListener(ctx, ln, nil)
}
