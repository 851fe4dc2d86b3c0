package rig

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopGrace is how long a component gets between SIGTERM and SIGKILL.
const stopGrace = 5 * time.Second

// process is one child process of the rig with its log file. Each run gets its own process group so
// that stopping it also reaches anything it started, and the kernel kills it (SIGKILL) if the rig's
// process dies without stopping it.
type process struct {
	name    string
	path    string
	args    []string
	env     []string
	logPath string
	// restart makes the process behave like a container with restartPolicy Always: it is started again
	// (after restartDelay) whenever it exits on its own. The csi-snapshotter needs this because it
	// exits by design when it loses its connection to the driver.
	restart bool
	// stopTier orders Stop: tier 0 first, then 1, ... (the apiserver only after its clients, its etcd
	// last, else each waits out the grace period for the other's connections to drain).
	stopTier int

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when the current run exits
	exitErr  error
	stopping bool
	starts   int
	started  time.Time // of the current run
	offset   int64     // size of the log when the current run started
}

// restartDelay is the pause before a supervised process is started again.
const restartDelay = time.Second

// start launches the process (it must not be running).
func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopping = false
	return p.startLocked()
}

func (p *process) startLocked() error {
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("rig: %s is already running", p.name)
		}
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("rig: %s log: %w", p.name, err)
	}
	var offset int64
	if st, err := logf.Stat(); err == nil {
		offset = st.Size()
	}
	fmt.Fprintf(logf, "=== rig %s: starting %s %s\n", time.Now().Format(time.RFC3339Nano), p.path, strings.Join(p.args, " "))
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := spawn(cmd); err != nil {
		logf.Close()
		return fmt.Errorf("rig: start %s: %w", p.name, err)
	}
	p.starts++
	p.started, p.offset = time.Now(), offset
	done := make(chan struct{})
	p.cmd, p.done, p.exitErr = cmd, done, nil
	go p.wait(cmd, done, logf)
	return nil
}

// wait reaps one run, kills whatever is left in its process group and restarts a supervised process
// that exited on its own.
func (p *process) wait(cmd *exec.Cmd, done chan struct{}, logf *os.File) {
	err := cmd.Wait()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	state := "exited"
	if err != nil {
		state = err.Error()
	}
	fmt.Fprintf(logf, "=== rig %s: %s %s\n", time.Now().Format(time.RFC3339Nano), p.name, state)
	logf.Close()
	p.mu.Lock()
	p.exitErr = err
	if err == nil {
		p.exitErr = errors.New("exited with status 0")
	}
	close(done)
	restart := p.restart && !p.stopping
	p.mu.Unlock()
	if !restart {
		return
	}
	time.Sleep(restartDelay)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping || p.done != done {
		return
	}
	if err := p.startLocked(); err != nil {
		appendLog(p.logPath, fmt.Sprintf("=== rig: restart of %s failed: %v\n", p.name, err))
	}
}

// running reports whether the current run is alive, and otherwise how it ended.
func (p *process) running() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false, errors.New("never started")
	}
	select {
	case <-p.done:
		return false, p.exitErr
	default:
		return true, nil
	}
}

// stop ends the process: SIGTERM to its process group, SIGKILL after grace. Safe to call repeatedly and
// on a process that never started; a supervised process is not restarted afterwards.
func (p *process) stop(grace time.Duration) {
	p.mu.Lock()
	p.stopping = true
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	if grace > 0 {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
			return
		case <-time.After(grace):
		}
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

// kill ends the process at once with SIGKILL only, like a crash; it is not restarted.
func (p *process) kill() {
	p.stop(0)
}

// pid is the process id of the current run, or 0.
func (p *process) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// startedAt is when the current run started.
func (p *process) startedAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.started
}

// logSinceStartContains reports whether the current run has logged s.
func (p *process) logSinceStartContains(s string) bool {
	p.mu.Lock()
	offset := p.offset
	p.mu.Unlock()
	f, err := os.Open(p.logPath)
	if err != nil {
		return false
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return false
	}
	data, _ := io.ReadAll(f)
	return strings.Contains(string(data), s)
}

// logTail returns the output of the current run for error messages: all of it when short (a process
// failing at start-up says why in its first lines), else the last lines.
func (p *process) logTail() string {
	p.mu.Lock()
	offset := p.offset
	p.mu.Unlock()
	if f, err := os.Open(p.logPath); err == nil {
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.Size()-offset <= 16<<10 {
			f.Seek(offset, io.SeekStart)
			data, _ := io.ReadAll(f)
			if n := strings.Count(string(data), "\n"); n <= 80 {
				return strings.TrimRight(string(data), "\n")
			}
		}
	}
	return logTail(p.logPath, 40)
}

func logTail(path string, lines int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const window = 16 << 10
	if st, err := f.Stat(); err == nil && st.Size() > window {
		f.Seek(st.Size()-window, io.SeekStart)
	}
	data, _ := io.ReadAll(f)
	return tail(data, lines)
}

func appendLog(path, line string) {
	if f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		f.WriteString(line)
		f.Close()
	}
}

// Pdeathsig fires when the thread that forked the child exits, not the process; all children are
// therefore forked from one goroutine locked to a thread that never exits.
var (
	spawnOnce sync.Once
	spawnReqs = make(chan spawnReq)
)

type spawnReq struct {
	cmd *exec.Cmd
	res chan error
}

func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		go func() {
			runtime.LockOSThread()
			for req := range spawnReqs {
				req.res <- req.cmd.Start()
			}
		}()
	})
	res := make(chan error, 1)
	spawnReqs <- spawnReq{cmd, res}
	return <-res
}
