package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenbroker/tokenbroker/config"
)

func init() { registerCommand(newHealthcheckCmd) }

// newHealthcheckCmd is the container health check: distroless images have
// no curl, so the binary asks its own server.
func newHealthcheckCmd(c *cli) *cobra.Command {
	var target, path string
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "exit 0 if the server at the configured listen address answers /healthz",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if target == "" {
				cfg, err := config.LoadEnv(c.configPath, os.LookupEnv)
				if err != nil {
					return err
				}
				host, port, err := net.SplitHostPort(cfg.Listen)
				if err != nil {
					return fmt.Errorf("listen %q: %w", cfg.Listen, err)
				}
				if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
					host = "127.0.0.1"
				}
				target = "http://" + net.JoinHostPort(host, port)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, target+path, nil)
			if err != nil {
				return usageErr("--url: %v", err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("healthcheck: %w", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("healthcheck: %s answered %d", path, resp.StatusCode)
			}
			fmt.Fprintln(c.stdout, "ok")
			return nil
		},
	}
	cmd.Flags().StringVar(&target, "url", "", "the server's base URL (default: from listen:)")
	cmd.Flags().StringVar(&path, "path", "/healthz", "/healthz (alive) or /readyz (ready for traffic)")
	return cmd
}
