// Package sock reads and writes non-blocking sockets with raw system calls
// (Read, Write, Poll for an event loop; Conn for a goroutine's net.Conn).
//
// A syscall.Syscall marks the goroutine's P as in a system call; the
// runtime's sysmon thread, which looks every 20 µs, takes a P that stays
// in one past its tick and hands it to another thread. A loopback write
// does the receiving socket's TCP work as well and often lasts longer than
// that on a busy machine: each such write cost a thread hand-off (futex)
// and kept sysmon polling at its fastest (1.6 nanosleeps per request at
// 1,000 req/s, strace of the source proxy), work nginx's event loop does
// not do. Reads, writes and zero-timeout polls of non-blocking descriptors
// cannot block, so they need none of that bookkeeping: they are made raw
// (gVisor's netstack writes its non-blocking descriptors the same way,
// rawfile.NonBlockingWrite).
package sock

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Read is read(2) on a non-blocking descriptor.
func Read(fd int, p []byte) (int, error) { return rawIO(unix.SYS_READ, fd, p) }

// Write is write(2) on a non-blocking descriptor.
func Write(fd int, p []byte) (int, error) { return rawIO(unix.SYS_WRITE, fd, p) }

// rawIO is read(2) or write(2) (trap) of p on fd, as a raw system call.
func rawIO(trap uintptr, fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Poll is epoll_wait(2) with a zero timeout: the ready events, never a
// wait.
func Poll(epfd int, events []unix.EpollEvent) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
