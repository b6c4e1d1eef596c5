package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

// Exit statuses (also in the root command's help).
const (
	exitOK       = 0
	exitFailure  = 1 // server, network or other failure
	exitUsage    = 2
	exitNotFound = 3 // no such connection (or connect session)
	exitReauth   = 4 // the provider refused to renew: a person must reconnect
)

// errUsage marks a mistake in how the command was called (exit status 2).
var errUsage = errors.New("usage")

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, a...)...)
}

// cli is what every command shares: its output streams and the global
// flags.
type cli struct {
	stdout, stderr io.Writer
	stdin          io.Reader
	// configPath is --config, for the commands that read the configuration.
	configPath string
	// output is --output: "table" (default) or "json".
	output string
	// jsonFlag is the older --json spelling of --output json.
	jsonFlag bool
}

// commandFactory builds one top-level command.
type commandFactory func(c *cli) *cobra.Command

// commandFactories are the top-level commands. Each command's file adds
// its own in an init function, so a new command is one new file and two
// helpers adding commands at once never touch the same lines. It is
// written only during package initialisation.
var commandFactories []commandFactory

func registerCommand(f commandFactory) { commandFactories = append(commandFactories, f) }

// asJSON reports whether the user asked for JSON output.
func (c *cli) asJSON() bool { return c.jsonFlag || c.output == "json" }

const rootLong = `tokenbroker keeps OAuth 2.0 connections alive: it stores tokens encrypted,
refreshes them before they expire, hands out valid access tokens and proxies
API calls with the token injected.

Server and admin commands read --config (default: built-in defaults, data in
./tokenbroker-data, listening on 127.0.0.1:8080) and TOKENBROKER_* environment
variables. The connections commands talk to a running server at
$TOKENBROKER_URL with the key in $TOKENBROKER_API_KEY.

Exit status: 0 success; 1 server, network or other failure; 2 usage;
3 not found; 4 reauth required (the provider refused to renew a connection:
a person must reconnect it). connections get exits 0 whatever the
connection's status and prints it.`

// newRoot builds the command tree.
func newRoot(c *cli) *cobra.Command {
	root := &cobra.Command{
		Use:           "tokenbroker",
		Short:         "tokenbroker keeps OAuth 2.0 connections alive",
		Long:          rootLong,
		SilenceUsage:  true,
		SilenceErrors: true,
		// A bare `tokenbroker` is a usage mistake: print the help to
		// stderr and exit 2.
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErr("unknown command %q; see `tokenbroker help`", args[0])
			}
			cmd.SetOut(c.stderr)
			_ = cmd.Help()
			return usageErr("a command is required")
		},
		Args: cobra.ArbitraryArgs,
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.SetIn(c.stdin)
	pf := root.PersistentFlags()
	pf.StringVar(&c.configPath, "config", "", "path to tokenbroker.yaml (default: built-in defaults and TOKENBROKER_* variables)")
	pf.StringVarP(&c.output, "output", "o", "table", "output format: table or json")
	pf.BoolVar(&c.jsonFlag, "json", false, "same as --output json")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
	_ = root.MarkPersistentFlagFilename("config", "yaml", "yml")
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		if !slices.Contains([]string{"table", "json"}, c.output) {
			return usageErr("--output must be table or json, not %q", c.output)
		}
		return nil
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageErr("%s: %v (see `tokenbroker help %s`)", cmd.CommandPath(), err, strings.TrimPrefix(cmd.CommandPath(), "tokenbroker "))
	})
	for _, f := range commandFactories {
		root.AddCommand(f(c))
	}
	return root
}

// group is a command that only holds subcommands: called alone, or with an
// unknown subcommand, it is a usage error that lists them.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			names := make([]string, 0, len(cmd.Commands()))
			for _, s := range cmd.Commands() {
				if s.IsAvailableCommand() {
					names = append(names, s.Name())
				}
			}
			if len(args) > 0 {
				return usageErr("unknown %s command %q (want one of: %s)", cmd.Name(), args[0], strings.Join(names, ", "))
			}
			return usageErr("%s needs a command: %s (see `tokenbroker help %s`)", cmd.Name(), strings.Join(names, ", "), cmd.Name())
		},
	}
	cmd.AddCommand(subs...)
	return cmd
}

// exactArgs is cobra.ExactArgs with a usage error naming what is expected.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			if n == 0 {
				return usageErr("%s takes no arguments, got %q", cmd.CommandPath(), args)
			}
			return usageErr("%s takes %s", cmd.CommandPath(), what)
		}
		return nil
	}
}

// run executes one command line and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr, stdin: os.Stdin}
	root := newRoot(c)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	if strings.HasPrefix(err.Error(), "unknown command ") || strings.HasPrefix(err.Error(), "unknown shorthand flag") {
		// cobra's own argument errors for the root command.
		err = fmt.Errorf("%w: %v", errUsage, err)
	}
	fmt.Fprintln(stderr, "tokenbroker:", err)
	return exitStatus(err)
}

// writeValue prints v as indented JSON, for --output json.
func writeValue(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
