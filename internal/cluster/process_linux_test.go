package cluster

import (
	"os/exec"
	"runtime"
	"syscall"
)

// startProcess starts cmd so that it is killed if the test binary dies
// without running its cleanups (a panic, a -timeout): a replica must never
// outlive the test and keep serving. Linux sends the parent-death signal
// when the thread that started the child exits, so the child is started
// from a locked thread, which the runtime keeps after it is unlocked.
func startProcess(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return cmd.Start()
}
