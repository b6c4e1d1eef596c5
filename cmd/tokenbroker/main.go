// Command tokenbroker runs the tokenbroker server and administers it.
//
//	tokenbroker serve [--config FILE] [--listen ADDR] [--database DSN]
//	tokenbroker apikey create --name NAME --scope admin|tokens
//	tokenbroker apikey list | revoke ID
//	tokenbroker keys rotate | reseal
//	tokenbroker connections list|get|import|refresh|delete|connect-link
//	tokenbroker providers list|check
//	tokenbroker version
//
// The server and admin commands take --config; connections talks to a
// running server. Exit status: 0 success, 1 failure, 2 usage, 3 not found,
// 4 reauth required.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

// errUsage marks a mistake in how the command was called (exit status 2).
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(ctx, args[1:], stdout, stderr)
	case "apikey":
		err = cmdAPIKey(ctx, args[1:], stdout, stderr)
	case "keys":
		err = cmdKeys(ctx, args[1:], stdout, stderr)
	case "connections":
		err = cmdConnections(ctx, args[1:], stdout, stderr)
	case "providers":
		err = cmdProviders(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "tokenbroker", versionString())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "tokenbroker: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "tokenbroker:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "tokenbroker:", err)
		return exitStatus(err) // connections.go: 1, or 3 not found, 4 reauth required
	}
}

const usage = `tokenbroker keeps OAuth 2.0 connections alive.

Usage:
  tokenbroker serve [--config FILE] [--listen ADDR] [--database DSN]
  tokenbroker apikey create --name NAME --scope admin|tokens [--config FILE]
  tokenbroker apikey list [--config FILE]
  tokenbroker apikey revoke ID [--config FILE]
  tokenbroker keys rotate [--config FILE]   add a new primary key and re-encrypt every token
  tokenbroker keys reseal [--config FILE]   re-encrypt every token under the current primary key
  tokenbroker connections list|get ID|import|refresh ID|delete ID|connect-link [--json]
                                            against a running server: $TOKENBROKER_URL,
                                            key in $TOKENBROKER_API_KEY (see connections help)
  tokenbroker providers list|check [--config FILE] [--json]
                                            the configured providers; check runs discovery
  tokenbroker version

With no --config, tokenbroker keeps its data in ./tokenbroker-data and
listens on 127.0.0.1:8080.

Exit status: 0 success; 1 server, network or other failure; 2 usage;
3 not found; 4 reauth required (the provider refused to renew a connection:
a person must reconnect it). connections get exits 0 whatever the
connection's status and prints it.
`

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, a...)...)
}

func newFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", "", "path to tokenbroker.yaml (default: built-in defaults)")
	return fs, cfg
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageErr("%s: %v", fs.Name(), err)
	}
	return nil
}
