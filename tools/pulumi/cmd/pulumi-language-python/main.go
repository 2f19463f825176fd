// Command pulumi-language-python is the Python language host the end-to-end tests give the Pulumi CLI.
//
// Pulumi's own host (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3) is a module that
// is never tagged, and the Go module proxy these machines reach serves no version of it. This host
// implements the same gRPC service (pulumirpc.LanguageRuntime, from the sdk release the CLI is built
// from) for what `pulumi preview/up/destroy` ask of a Python program: it starts the program through the
// SDK's own `pulumi-language-python-exec` script (shipped in the sdk module, installed beside this
// binary) with the virtualenv named in Pulumi.yaml, passes the stack config the way Pulumi's host does
// (PULUMI_CONFIG, PULUMI_CONFIG_SECRET_KEYS) and reports the program's exit status. Plugin discovery is
// left to the engine: with no required plugins reported, it loads each provider when the program first
// registers a resource of it, at the version the provider SDK names.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// exitCodeUserActionable is the exec script's status for "the error was already shown to the user".
const exitCodeUserActionable = 32

const execScriptName = "pulumi-language-python-exec"

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	engineAddress string
	execScript    string
	// virtualenv from a -virtualenv flag (older engines pass runtime options as flags).
	virtualenv string
}

func main() {
	h, err := newHost(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-python: %v\n", err)
		os.Exit(1)
	}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-python: %v\n", err)
		os.Exit(1)
	}
	// The engine reads the port from the first line of stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-python: %v\n", err)
		os.Exit(1)
	}
}

// newHost reads the engine's command line: flags of the form -name=value (unknown ones are ignored, the
// engine adds tracing and logging flags), then the engine's address.
func newHost(args []string) (*host, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	h := &host{execScript: filepath.Join(filepath.Dir(self), execScriptName)}
	for _, arg := range args {
		name, value, isFlag := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		switch {
		case strings.HasPrefix(arg, "-") && isFlag && name == "virtualenv":
			h.virtualenv = value
		case strings.HasPrefix(arg, "-"):
		default:
			h.engineAddress = arg
		}
	}
	if _, err := os.Stat(h.execScript); err != nil {
		return nil, fmt.Errorf("%s must be installed beside this binary: %w", execScriptName, err)
	}
	return h, nil
}

func (h *host) Handshake(
	_ context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.engineAddress = req.GetEngineAddress()
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version.Version}, nil
}

func (h *host) GetRequiredPlugins(
	context.Context, *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	return &pulumirpc.GetRequiredPluginsResponse{}, nil
}

func (h *host) GetRequiredPackages(
	context.Context, *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

// InstallDependencies has nothing to do: the project's set-up script owns the virtualenv.
func (h *host) InstallDependencies(
	_ *pulumirpc.InstallDependenciesRequest, _ pulumirpc.LanguageRuntime_InstallDependenciesServer,
) error {
	return nil
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	root, programDir, entryPoint := req.GetPwd(), req.GetPwd(), req.GetProgram()
	options := map[string]any{}
	if info := req.GetInfo(); info != nil {
		root, programDir, entryPoint = info.GetRootDirectory(), info.GetProgramDirectory(), info.GetEntryPoint()
		options = info.GetOptions().AsMap()
	}
	python, env, err := h.interpreter(root, options)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	configJSON, err := json.Marshal(req.GetConfig())
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secretKeysJSON, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}
	args := []string{
		"-u", h.execScript,
		"--monitor", req.GetMonitorAddress(),
		"--engine", h.engineAddress,
		"--project", req.GetProject(),
		"--stack", req.GetStack(),
		"--pwd", programDir,
		"--root_directory", root,
		"--parallel", fmt.Sprint(req.GetParallel()),
		"--dry_run", fmt.Sprint(req.GetDryRun()),
		"--organization", req.GetOrganization(),
		entryPoint,
	}
	args = append(args, req.GetArgs()...)
	cmd := exec.CommandContext(ctx, python, args...)
	cmd.Dir = programDir
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Env = append(env, "PULUMI_CONFIG="+string(configJSON), "PULUMI_CONFIG_SECRET_KEYS="+string(secretKeysJSON))
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if exitErr.ExitCode() == exitCodeUserActionable {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{
				Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode()),
			}, nil
		}
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

// interpreter picks the Python of the project's virtualenv (runtime option `virtualenv`, relative to the
// project root) and the environment that activates it; without one, python3 from PATH.
func (h *host) interpreter(root string, options map[string]any) (string, []string, error) {
	env := os.Environ()
	venv := h.virtualenv
	if value, ok := options["virtualenv"].(string); ok && value != "" {
		venv = value
	}
	if venv == "" {
		return "python3", env, nil
	}
	if !filepath.IsAbs(venv) {
		venv = filepath.Join(root, venv)
	}
	python := filepath.Join(venv, "bin", "python")
	if _, err := os.Stat(python); err != nil {
		return "", nil, fmt.Errorf("the virtualenv %s has no bin/python: create it with scripts/setup-venv.sh", venv)
	}
	env = append(env, "VIRTUAL_ENV="+venv, "PATH="+filepath.Join(venv, "bin")+":"+os.Getenv("PATH"))
	return python, env, nil
}

// RunPlugin runs a policy pack (kind "analyzer") written in Python with the SDK's runner, streaming its
// output to the engine, which reads the pack's gRPC port from the first line of stdout.
func (h *host) RunPlugin(
	req *pulumirpc.RunPluginRequest, server pulumirpc.LanguageRuntime_RunPluginServer,
) error {
	if kind := req.GetKind(); kind != "" && kind != "analyzer" {
		return status.Errorf(codes.Unimplemented, "this host runs policy packs only, not %q plugins", kind)
	}
	info := req.GetInfo()
	programDir := info.GetProgramDirectory()
	if programDir == "" {
		programDir = req.GetPwd()
	}
	python, env, err := h.interpreter(info.GetRootDirectory(), info.GetOptions().AsMap())
	if err != nil {
		return err
	}
	args := append([]string{"-u", "-m", "pulumi.policy"}, req.GetArgs()...)
	cmd := exec.CommandContext(server.Context(), python, append(args, programDir)...)
	cmd.Dir = req.GetPwd()
	cmd.Env = append(env, req.GetEnv()...)
	var sendLock sync.Mutex
	send := func(response *pulumirpc.RunPluginResponse) error {
		sendLock.Lock()
		defer sendLock.Unlock()
		return server.Send(response)
	}
	cmd.Stdout = streamWriter(func(chunk []byte) error {
		return send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stdout{Stdout: chunk}})
	})
	cmd.Stderr = streamWriter(func(chunk []byte) error {
		return send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stderr{Stderr: chunk}})
	})
	code := int32(0)
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			return err
		}
		code = int32(exitErr.ExitCode())
	}
	return send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: code}})
}

// streamWriter adapts a send function to an io.Writer (each write is one message, copied).
type streamWriter func([]byte) error

var _ io.Writer = streamWriter(nil)

func (w streamWriter) Write(p []byte) (int, error) {
	if err := w(append([]byte(nil), p...)); err != nil {
		return 0, err
	}
	return len(p), nil
}
