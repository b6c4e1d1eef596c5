//go:build !unix

package app

func fdLimit() int { return 0 }
