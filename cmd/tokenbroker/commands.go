package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/app"
	"github.com/tokenbroker/tokenbroker/seal"
	"github.com/tokenbroker/tokenbroker/server"
	"github.com/tokenbroker/tokenbroker/store"
)

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlags("serve", stderr)
	listen := fs.String("listen", "", "address to listen on (overrides listen:)")
	database := fs.String("database", "", "database DSN (overrides database:)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("serve takes no arguments, got %q", fs.Args())
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	if *database != "" {
		cfg.Database = *database
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	if err := app.EnsureDataDir(cfg.DataDir); err != nil {
		return err
	}
	a, err := app.New(ctx, cfg, app.Options{Logger: log})
	if err != nil {
		return err
	}
	defer a.Close()
	if _, err := a.BootstrapAPIKey(ctx, stdout, time.Now()); err != nil {
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
	return a.Serve(ctx, nil)
}

// openStore opens the configured store for administrative commands that
// run beside, or instead of, the server. They need neither the providers'
// secrets nor the key ring.
func openStore(ctx context.Context, cfgPath string) (store.Backend, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	if err := app.EnsureDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	return app.OpenStore(ctx, cfg, slog.New(slog.DiscardHandler), time.Now)
}

func cmdAPIKey(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErr("apikey needs a subcommand: create, list or revoke")
	}
	sub, args := args[0], args[1:]
	fs, cfgPath := newFlags("apikey "+sub, stderr)
	var name, scope *string
	if sub == "create" {
		name = fs.String("name", "", "a name that says who uses the key (required)")
		scope = fs.String("scope", "tokens", "admin (everything) or tokens (token, proxy and status only)")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch sub {
	case "create":
		if strings.TrimSpace(*name) == "" {
			return usageErr("apikey create: --name is required")
		}
		if fs.NArg() > 0 {
			return usageErr("apikey create takes no arguments, got %q", fs.Args())
		}
		secret, key, err := server.GenerateAPIKey(*name, *scope, time.Now().UTC())
		if err != nil {
			return usageErr("apikey create: %v", err)
		}
		st, err := openStore(ctx, *cfgPath)
		if err != nil {
			return err
		}
		defer st.Close()
		if err := st.CreateAPIKey(ctx, key); err != nil {
			return err
		}
		// The key alone on stdout, so scripts can capture it.
		fmt.Fprintln(stdout, secret)
		fmt.Fprintf(stderr, "created API key %s (%s, scope %s); it is not shown again\n", key.ID, key.Name, key.Scope)
		return nil
	case "list":
		st, err := openStore(ctx, *cfgPath)
		if err != nil {
			return err
		}
		defer st.Close()
		keys, err := st.ListAPIKeys(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tSCOPE\tCREATED\tREVOKED")
		for _, k := range keys {
			revoked := "-"
			if !k.RevokedAt.IsZero() {
				revoked = k.RevokedAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Scope, k.CreatedAt.UTC().Format(time.RFC3339), revoked)
		}
		return tw.Flush()
	case "revoke":
		if fs.NArg() != 1 {
			return usageErr("apikey revoke takes one key ID")
		}
		st, err := openStore(ctx, *cfgPath)
		if err != nil {
			return err
		}
		defer st.Close()
		if err := st.RevokeAPIKey(ctx, fs.Arg(0)); err != nil {
			return fmt.Errorf("apikey revoke %s: %w", fs.Arg(0), err)
		}
		fmt.Fprintf(stderr, "revoked API key %s\n", fs.Arg(0))
		return nil
	default:
		return usageErr("unknown apikey subcommand %q (create, list, revoke)", sub)
	}
}

func cmdKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "rotate" && args[0] != "reseal") {
		return usageErr("keys needs a subcommand: rotate or reseal")
	}
	sub := args[0]
	fs, cfgPath := newFlags("keys "+sub, stderr)
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	// Make sure the ring loads before adding to it: rotating a file we
	// cannot read would strand every stored token.
	ring, err := seal.Load(cfg.EncryptionKeysFile)
	if err != nil {
		return err
	}
	id := ring.PrimaryID()
	if sub == "rotate" {
		if id, err = seal.Rotate(cfg.EncryptionKeysFile); err != nil {
			return err
		}
	}
	if sub == "rotate" {
		if ring, err = seal.Load(cfg.EncryptionKeysFile); err != nil {
			return err
		}
		// Running servers look at the key file before each write, at most
		// app.KeyFileFreshness apart. Waiting longer than that before
		// re-sealing means no server seals a row under the old key after
		// the re-seal has passed it.
		time.Sleep(4 * app.KeyFileFreshness)
	}
	st, err := openStore(ctx, *cfgPath)
	if err != nil {
		return err
	}
	defer st.Close()
	// Re-sealing needs the store and the key ring only, no providers.
	b, err := broker.New(broker.Options{Store: st, Sealer: ring})
	if err != nil {
		return err
	}
	n, err := b.Reseal(ctx)
	if err != nil {
		return fmt.Errorf("primary key %s; re-encryption stopped after %d connections (run `tokenbroker keys reseal` to finish; old keys still decrypt): %w", id, n, err)
	}
	fmt.Fprintf(stdout, "primary key %s; re-encrypted %d connections\n", id, n)
	fmt.Fprintln(stderr, "running servers seal under the new key from their next write on, and reload the key file within 2s when idle")
	return nil
}
