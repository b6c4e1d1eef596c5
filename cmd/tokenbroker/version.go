package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func init() { registerCommand(newVersionCmd) }

// version may be set at build time with -ldflags "-X main.version=…"; by
// default it comes from the module's build information, so a binary built
// by `go install github.com/tokenbroker/tokenbroker/cmd/tokenbroker@v1.2.3`
// reports v1.2.3, and one built from a checkout reports its VCS revision.
var version = ""

func newVersionCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if c.asJSON() {
				return writeValue(c.stdout, map[string]string{"version": versionString()})
			}
			fmt.Fprintln(c.stdout, "tokenbroker", versionString())
			return nil
		},
	}
}

func versionString() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = &debug.BuildInfo{}
	}
	return versionFrom(version, bi)
}

// versionFrom picks the version: an -ldflags override, the module version
// (set by `go install …@version`), or the VCS revision of a local build
// (with "-dirty" for uncommitted changes), else "devel".
func versionFrom(override string, bi *debug.BuildInfo) string {
	if override != "" {
		return override
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		return "devel+" + rev + dirty
	}
	return "devel"
}
