package main

import (
	"context"
	"fmt"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenbroker/tokenbroker/config"
	"github.com/tokenbroker/tokenbroker/internal/app"
	"github.com/tokenbroker/tokenbroker/store"
)

func init() { registerCommand(newMigrateCmd) }

// openMigrator opens the configured database without touching its schema.
func openMigrator(ctx context.Context, cfgPath string) (store.Migrator, func() error, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	if _, _, err := cfg.DatabaseDSN(); err != nil {
		return nil, nil, err
	}
	if err := app.EnsureDataDir(cfg.DataDir); err != nil {
		return nil, nil, err
	}
	st, err := app.OpenStoreNoMigrate(ctx, cfg, slog.New(slog.DiscardHandler), time.Now)
	if err != nil {
		return nil, nil, err
	}
	m, ok := st.(store.Migrator)
	if !ok {
		st.Close()
		return nil, nil, fmt.Errorf("the configured database has no schema migrations")
	}
	return m, st.Close, nil
}

func newMigrateCmd(c *cli) *cobra.Command {
	up := &cobra.Command{
		Use:   "up",
		Short: "apply every pending migration (safe to run while old replicas serve)",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, closeFn, err := openMigrator(cmd.Context(), c.configPath)
			if err != nil {
				return err
			}
			defer closeFn()
			done, err := m.MigrateUp(cmd.Context())
			if err != nil {
				return err
			}
			if c.asJSON() {
				return writeValue(c.stdout, map[string]any{"applied": migrationRows(done)})
			}
			if len(done) == 0 {
				fmt.Fprintln(c.stdout, "the database schema is up to date; nothing to apply")
				return nil
			}
			for _, x := range done {
				fmt.Fprintf(c.stdout, "applied %04d %s\n", x.Version, x.Name)
			}
			return nil
		},
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "list the migrations and whether each is applied; exit 1 when some are pending",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, closeFn, err := openMigrator(cmd.Context(), c.configPath)
			if err != nil {
				return err
			}
			defer closeFn()
			ms, err := m.Migrations(cmd.Context())
			if err != nil {
				return err
			}
			pending := 0
			for _, x := range ms {
				if x.AppliedAt.IsZero() {
					pending++
				}
			}
			if c.asJSON() {
				if err := writeValue(c.stdout, map[string]any{"migrations": migrationRows(ms), "pending": pending}); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "VERSION\tNAME\tAPPLIED")
				for _, x := range ms {
					at := "pending"
					if !x.AppliedAt.IsZero() {
						at = x.AppliedAt.UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%04d\t%s\t%s\n", x.Version, x.Name, at)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if pending > 0 {
				return fmt.Errorf("%d migrations pending; run `tokenbroker migrate up`", pending)
			}
			return nil
		},
	}
	g := group("migrate", "apply or inspect the database schema migrations", up, status)
	g.Long = `Apply or inspect the database schema migrations.

By default every replica migrates on start (under a lock, so concurrent
starts are safe). A deploy that migrates as a separate step runs
` + "`tokenbroker migrate up`" + ` once, then starts replicas with
` + "`tokenbroker serve --migrate=false`" + `, which refuses to start on a schema
that is behind instead of changing it.`
	return g
}

type migrationRow struct {
	Version   int        `json:"version"`
	Name      string     `json:"name"`
	AppliedAt *time.Time `json:"applied_at"`
}

func migrationRows(ms []store.Migration) []migrationRow {
	out := make([]migrationRow, 0, len(ms))
	for _, m := range ms {
		r := migrationRow{Version: m.Version, Name: m.Name}
		if !m.AppliedAt.IsZero() {
			t := m.AppliedAt.UTC()
			r.AppliedAt = &t
		}
		out = append(out, r)
	}
	return out
}
