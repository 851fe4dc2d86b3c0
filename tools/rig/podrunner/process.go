package podrunner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// imageRepo strips the tag or digest from an image reference.
func imageRepo(image string) string {
	if i := strings.IndexByte(image, '@'); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndexByte(image, ':'); i > strings.LastIndexByte(image, '/') {
		image = image[:i]
	}
	return image
}

// resolveImage returns the host directory standing in for image: the entry for the exact reference,
// else an entry given without tag or digest for the same repository.
func resolveImage(images map[string]string, image string) (string, bool) {
	if d, ok := images[image]; ok {
		return d, true
	}
	d, ok := images[imageRepo(image)]
	return d, ok
}

// errImageNotMapped is the message of a container whose image no directory stands in for.
func errImageNotMapped(images map[string]string, image string) string {
	known := make([]string, 0, len(images))
	for k := range images {
		known = append(known, k)
	}
	sort.Strings(known)
	return fmt.Sprintf("Failed to pull image %q: the rig maps no directory to this image (known images: %s)", image, strings.Join(known, ", "))
}

// resolveCommand finds the executable for the container in the image directory: command[0] by its
// base name, or, without a command, the executable named after the image's repository (the image's
// entrypoint by convention). argv is the full argument vector, argv[0] included.
func resolveCommand(c *v1.Container, dir string) (path string, argv []string, err error) {
	var name string
	if len(c.Command) == 0 {
		name = filepath.Base(imageRepo(c.Image))
		argv = append([]string{name}, c.Args...)
	} else {
		name = filepath.Base(c.Command[0])
		argv = append(append([]string{}, c.Command...), c.Args...)
	}
	path = filepath.Join(dir, name)
	fi, err := os.Stat(path)
	if err != nil {
		return "", nil, fmt.Errorf("exec: %q: no executable %q in the image directory %s", argv[0], name, dir)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", nil, fmt.Errorf("exec: %q: %s is not an executable file", argv[0], path)
	}
	return path, argv, nil
}

// exitCode reports an exit the way container runtimes do: 128+signal for a process killed by a signal.
func exitCode(ps *os.ProcessState) int32 {
	if ps == nil {
		return 128 + int32(syscall.SIGKILL)
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int32(ws.Signal())
	}
	return int32(ps.ExitCode())
}

// signalGroup signals every process of the process group led by pid.
func signalGroup(pid int, sig syscall.Signal) {
	if pid > 0 {
		_ = syscall.Kill(-pid, sig)
	}
}

// readTail returns at most the last max bytes of the file written after offset.
func readTail(path string, offset int64, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	start := offset
	if fi.Size()-max > start {
		start = fi.Size() - max
	}
	if start >= fi.Size() {
		return nil, nil
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

// runContainer runs one container, restarting it as the pod's restart policy says, and reports whether
// it completed successfully.
func (r *runner) runContainer(pr *podRun, volumes map[string]string, init bool, i int) bool {
	pod := pr.latest()
	c := pod.Spec.Containers
	if init {
		c = pod.Spec.InitContainers
	}
	policy := pod.Spec.RestartPolicy
	for attempt := 0; ; attempt++ {
		code, stopped := r.runOnce(pr, pod, &c[i], volumes, init, i)
		if stopped {
			return false
		}
		restart := policy == v1.RestartPolicyAlways && !init ||
			policy != v1.RestartPolicyNever && code != 0
		if !restart {
			return code == 0
		}
		backoff := min(time.Second<<min(attempt, 5), 30*time.Second)
		pr.update(func(st *podState) {
			cs := st.slot(init, i)
			cs.LastTerminationState = cs.State
			cs.State = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{
				Reason:  "CrashLoopBackOff",
				Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", backoff, c[i].Name, pod.Name, pod.Namespace, pod.UID),
			}}
			cs.RestartCount++
		})
		r.sync(pr)
		if !r.pause(pr, backoff) {
			return false
		}
	}
}

// runOnce starts the container's process and waits for it. stopped reports that the pod was stopped
// (deleted, past its deadline, or the runner is shutting down) before the container could finish.
func (r *runner) runOnce(pr *podRun, pod *v1.Pod, c *v1.Container, volumes map[string]string, init bool, i int) (code int32, stopped bool) {
	ctx := r.ctx
	terminate := func(code int32, reason, message string, started time.Time) {
		now := metav1.Now()
		pr.update(func(st *podState) {
			cs := st.slot(init, i)
			cs.State = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{
				ExitCode: code, Reason: reason, Message: message,
				StartedAt: metav1.NewTime(started), FinishedAt: now, ContainerID: cs.ContainerID,
			}}
			cs.Ready = init && code == 0
			cs.Started = ptr.To(false)
		})
		r.sync(pr)
	}

	dir, ok := resolveImage(r.cfg.Images, c.Image)
	if !ok {
		r.logf("pod %s/%s: container %s: image %q is not mapped", pod.Namespace, pod.Name, c.Name, c.Image)
		terminate(128, "ErrImagePull", errImageNotMapped(r.cfg.Images, c.Image), time.Now())
		return 128, false
	}

	// A container whose configuration cannot be built yet (a missing Secret key, say) waits, as with
	// the kubelet's CreateContainerConfigError, until it can be or the pod is stopped.
	var cmd *exec.Cmd
	var spec *execSpec
	delay := 500 * time.Millisecond
	for {
		var err error
		spec, err = r.buildExec(ctx, pr, pod, c, dir, volumes)
		if err == nil {
			break
		}
		var startErr *startError
		if errors.As(err, &startErr) {
			terminate(128, "StartError", err.Error(), time.Now())
			return 128, false
		}
		pr.update(func(st *podState) {
			st.slot(init, i).State = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: err.Error()}}
		})
		r.sync(pr)
		if !r.pause(pr, delay) {
			return 0, true
		}
		delay = min(2*delay, 16*time.Second)
	}
	if pr.killed() || ctx.Err() != nil {
		return 0, true
	}

	logFile, err := os.OpenFile(spec.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		terminate(128, "StartError", err.Error(), time.Now())
		return 128, false
	}
	offset, _ := logFile.Seek(0, io.SeekEnd)
	if err := os.WriteFile(spec.terminationFile, nil, 0o666); err != nil {
		logFile.Close()
		terminate(128, "StartError", err.Error(), time.Now())
		return 128, false
	}
	cmd = &exec.Cmd{
		Path:        spec.path,
		Args:        spec.argv,
		Env:         spec.env,
		Dir:         spec.workDir,
		Stdout:      logFile,
		Stderr:      logFile,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	started := time.Now()
	err = cmd.Start()
	logFile.Close()
	if err != nil {
		terminate(128, "StartError", err.Error(), started)
		return 128, false
	}
	pid := cmd.Process.Pid
	r.logf("pod %s/%s: container %s started (pid %d): %s %q", pod.Namespace, pod.Name, c.Name, pid, spec.path, spec.argv[1:])
	pr.update(func(st *podState) {
		cs := st.slot(init, i)
		cs.ContainerID = "rig://" + strconv.Itoa(pid)
		cs.ImageID = "dir://" + dir
		cs.State = v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: metav1.NewTime(started)}}
		cs.Started = ptr.To(true)
		cs.Ready = !init
	})
	r.sync(pr)

	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-pr.kill:
		pr.mu.Lock()
		grace := pr.grace
		pr.mu.Unlock()
		signalGroup(pid, syscall.SIGTERM)
		t := time.NewTimer(grace)
		select {
		case <-exited:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		stopped = true
	case <-ctx.Done():
		stopped = true
	}
	// Whatever the container left behind in its process group goes with it, as with a container's
	// PID namespace.
	signalGroup(pid, syscall.SIGKILL)
	<-exited

	code = exitCode(cmd.ProcessState)
	file, fileErr := readTail(spec.terminationFile, 0, maxTerminationMessageLength)
	msg := terminationMessage(c.TerminationMessagePolicy, code, file, fileErr, func() []byte {
		out, _ := readTail(spec.logPath, offset, maxTerminationMessageLogLength)
		return out
	})
	r.logf("pod %s/%s: container %s exited with code %d", pod.Namespace, pod.Name, c.Name, code)
	if ctx.Err() == nil {
		terminate(code, exitReason(code), msg, started)
	}
	return code, stopped && code != 0
}

// execSpec is everything needed to start one container's process.
type execSpec struct {
	path, workDir            string
	argv, env                []string
	logPath, terminationFile string
}

// startError is a container that cannot start at all (no such executable), as opposed to one whose
// configuration is not ready yet.
type startError struct{ err error }

func (e *startError) Error() string { return e.err.Error() }

// buildExec resolves the executable, the environment and the host paths of one container.
func (r *runner) buildExec(ctx context.Context, pr *podRun, pod *v1.Pod, c *v1.Container, imageDir string, volumes map[string]string) (*execSpec, error) {
	path, argv, err := resolveCommand(c, imageDir)
	if err != nil {
		return nil, &startError{err}
	}
	spec := &execSpec{
		path:            path,
		logPath:         filepath.Join(pr.dir, c.Name+".log"),
		terminationFile: filepath.Join(pr.dir, c.Name+".termination-log"),
	}
	mounts, err := containerMounts(c, volumes, spec.terminationFile)
	if err != nil {
		return nil, err
	}
	rw := newPathRewriter(mounts)
	vars, err := r.containerEnv(ctx, pod, c, imageDir, pr.dir)
	if err != nil {
		return nil, err
	}
	lookup := func(name string) (string, bool) {
		for _, v := range vars {
			if v.Name == name {
				return v.Value, true
			}
		}
		return "", false
	}
	for _, a := range argv {
		spec.argv = append(spec.argv, rw.Rewrite(expandVars(a, lookup)))
	}
	for _, v := range vars {
		spec.env = append(spec.env, v.Name+"="+rw.Rewrite(v.Value))
	}
	spec.workDir = pr.dir
	if c.WorkingDir != "" {
		if p, ok := rw.HostPath(c.WorkingDir); ok {
			spec.workDir = p
		}
	}
	return spec, nil
}
