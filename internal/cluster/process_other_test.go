//go:build !linux

package cluster

import "os/exec"

// startProcess starts cmd. Outside Linux there is no parent-death signal:
// a replica is stopped by the test's cleanup only.
func startProcess(cmd *exec.Cmd) error { return cmd.Start() }
