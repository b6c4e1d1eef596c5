//go:build unix

package app

import "syscall"

// fdLimit is the process's open-file limit, or 0 when unknown. (Go raises
// the soft limit to the hard one at start-up on Linux.)
func fdLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<30 {
		return 0
	}
	return int(r.Cur)
}
