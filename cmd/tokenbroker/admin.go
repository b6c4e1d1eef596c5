package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/app"
	"github.com/tokenbroker/tokenbroker/seal"
	"github.com/tokenbroker/tokenbroker/server"
	"github.com/tokenbroker/tokenbroker/store"
)

func init() {
	registerCommand(newAPIKeyCmd)
	registerCommand(newKeysCmd)
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

func newAPIKeyCmd(c *cli) *cobra.Command {
	var name, scope, connections, providers string
	create := &cobra.Command{
		Use:   "create --name NAME [--scope admin|tokens|proxy|connect] [--connections PATTERN,…] [--providers NAME,…]",
		Short: "create an API key; prints the key once, alone on stdout",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(name) == "" {
				return usageErr("apikey create: --name is required")
			}
			secret, key, err := server.NewAPIKey(keySpec(name, scope, connections, providers), time.Now().UTC())
			if err != nil {
				return usageErr("apikey create: %v", err)
			}
			st, err := openStore(cmd.Context(), c.configPath)
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.CreateAPIKey(cmd.Context(), key); err != nil {
				return err
			}
			if err := auditKeyChange(cmd.Context(), st, "apikey.create", key); err != nil {
				fmt.Fprintf(c.stderr, "warning: the key was created but could not be recorded in the audit trail: %v\n", err)
			}
			if c.asJSON() {
				return writeValue(c.stdout, map[string]any{"id": key.ID, "name": key.Name, "scope": key.Scope,
					"connections": nonNil(key.Connections), "providers": nonNil(key.Providers), "key": secret})
			}
			// The key alone on stdout, so scripts can capture it.
			fmt.Fprintln(c.stdout, secret)
			fmt.Fprintf(c.stderr, "created API key %s (%s, scope %s); it is not shown again\n", key.ID, key.Name, key.Scope)
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "", "a name that says who uses the key (required)")
	create.Flags().StringVar(&scope, "scope", "tokens", roleHelp)
	create.Flags().StringVar(&connections, "connections", "", connectionsHelp)
	create.Flags().StringVar(&providers, "providers", "", providersHelp)
	_ = create.RegisterFlagCompletionFunc("scope", cobra.FixedCompletions(server.Roles, cobra.ShellCompDirectiveNoFileComp))

	list := &cobra.Command{
		Use:   "list",
		Short: "list API keys (never their secrets)",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := openStore(cmd.Context(), c.configPath)
			if err != nil {
				return err
			}
			defer st.Close()
			keys, err := st.ListAPIKeys(cmd.Context())
			if err != nil {
				return err
			}
			if c.asJSON() {
				type row struct {
					ID          string     `json:"id"`
					Name        string     `json:"name"`
					Scope       string     `json:"scope"`
					Connections []string   `json:"connections"`
					Providers   []string   `json:"providers"`
					CreatedAt   time.Time  `json:"created_at"`
					RevokedAt   *time.Time `json:"revoked_at,omitempty"`
				}
				rows := make([]row, 0, len(keys))
				for _, k := range keys {
					r := row{ID: k.ID, Name: k.Name, Scope: k.Scope, Connections: nonNil(k.Connections), Providers: nonNil(k.Providers), CreatedAt: k.CreatedAt.UTC()}
					if !k.RevokedAt.IsZero() {
						t := k.RevokedAt.UTC()
						r.RevokedAt = &t
					}
					rows = append(rows, r)
				}
				return writeValue(c.stdout, map[string]any{"api_keys": rows})
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tSCOPE\tCONNECTIONS\tCREATED\tREVOKED")
			for _, k := range keys {
				revoked := "-"
				if !k.RevokedAt.IsZero() {
					revoked = k.RevokedAt.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Scope, scopeText(k), k.CreatedAt.UTC().Format(time.RFC3339), revoked)
			}
			return tw.Flush()
		},
	}

	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "revoke an API key",
		Args:  exactArgs(1, "one key ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := openStore(cmd.Context(), c.configPath)
			if err != nil {
				return err
			}
			defer st.Close()
			if err := revokeKey(cmd.Context(), st, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(c.stderr, "revoked API key %s\n", args[0])
			return nil
		},
	}
	return group("apikey", "create, list and revoke API keys (works on the database directly)", create, list, revoke)
}

func newKeysCmd(c *cli) *cobra.Command {
	sub := func(name, short string) *cobra.Command {
		return &cobra.Command{
			Use:   name,
			Short: short,
			Args:  exactArgs(0, ""),
			RunE:  func(cmd *cobra.Command, args []string) error { return keysRun(cmd.Context(), c, name) },
		}
	}
	return group("keys", "manage the encryption key ring",
		sub("rotate", "add a new primary key and re-encrypt every token"),
		sub("reseal", "re-encrypt every token under the current primary key"))
}

func keysRun(ctx context.Context, c *cli, sub string) error {
	cfg, err := config.Load(c.configPath)
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
		if ring, err = seal.Load(cfg.EncryptionKeysFile); err != nil {
			return err
		}
		// Running servers look at the key file before each write, at most
		// app.KeyFileFreshness apart. Waiting longer than that before
		// re-sealing means no server seals a row under the old key after
		// the re-seal has passed it.
		time.Sleep(4 * app.KeyFileFreshness)
	}
	st, err := openStore(ctx, c.configPath)
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
	fmt.Fprintf(c.stdout, "primary key %s; re-encrypted %d connections\n", id, n)
	fmt.Fprintln(c.stderr, "running servers seal under the new key from their next write on, and reload the key file within 2s when idle")
	return nil
}

// nonNil shows an empty scope list as [] rather than null.
func nonNil(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}
