// Command tokenbroker runs the tokenbroker server and administers it.
//
//	tokenbroker serve [--config FILE] [--listen ADDR] [--database DSN] [--migrate=false] [--demo]
//	tokenbroker migrate up|status
//	tokenbroker apikey create|list|revoke
//	tokenbroker audit [--connection ID] [--actor NAME] [--action ACTION] [--since 24h]
//	tokenbroker keys rotate|reseal
//	tokenbroker connections list|get|import|refresh|delete|connect-link
//	tokenbroker providers list|check
//	tokenbroker completion bash|zsh|fish
//	tokenbroker version
//
// The CLI is built on spf13/cobra: flags go anywhere on the line,
// `tokenbroker help <command>` documents each command, and every command
// that prints a table takes --output json. Exit status: 0 success,
// 1 failure, 2 usage, 3 not found, 4 reauth required.
//
// Each command lives in its own file and registers itself with
// [registerCommand]; adding a command is one new file.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// The first SIGINT/SIGTERM starts an orderly shutdown (serve drains);
	// a second one forces the exit (see serve.go).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(withCPUProfile(os.Getenv(cpuProfileEnv), os.Stderr, func() int {
		return run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}))
}
