package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weft-mesh/weft/api/logkey"
)

// Versions are the CNI spec versions weft-cni speaks.
var Versions = version.PluginSupports("0.4.0", "1.0.0", "1.1.0")

// About is the plugin's VERSION "about" text.
const About = "weft-cni: enrolls a pod's network namespace in the Weft mesh before its containers start"

// Funcs are the plugin's verbs for skel.PluginMainFuncs. The plugin keeps
// no state: the agent holds it.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus}
}

// k8sArgs are the CNI_ARGS a kubelet's runtime passes.
type k8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive // names fixed by the runtimes
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive
	K8S_POD_UID                types.UnmarshallableString //nolint:revive
}

// prepare parses the config and the pod's identity from args.
func prepare(args *skel.CmdArgs, needPod bool) (*NetConf, Request, *slog.Logger, error) {
	conf, err := ParseConf(args.StdinData)
	if err != nil {
		return nil, Request{}, nil, types.NewError(types.ErrInvalidNetworkConfig, "weft-cni: invalid network config", err.Error())
	}
	lvl, _ := conf.level()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})).With(logkey.Component, PluginType)
	var ka k8sArgs
	ka.IgnoreUnknown = true
	if err := types.LoadArgs(args.Args, &ka); err != nil {
		return nil, Request{}, nil, types.NewError(types.ErrInvalidEnvironmentVariables, "weft-cni: invalid CNI_ARGS", err.Error())
	}
	req := Request{
		Node: conf.Node, ContainerID: args.ContainerID, Netns: args.Netns,
		Namespace: string(ka.K8S_POD_NAMESPACE), Name: string(ka.K8S_POD_NAME), UID: string(ka.K8S_POD_UID),
	}
	if needPod && (req.Namespace == "" || req.Name == "" || req.UID == "") {
		return nil, Request{}, nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			"weft-cni: CNI_ARGS must carry K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_UID", args.Args)
	}
	return conf, req, log, nil
}

// prevResult parses the previous plugin's result: weft-cni is chained and
// changes no interface, so it passes that result through.
func prevResult(conf *NetConf) (types.Result, error) {
	if conf.RawPrevResult == nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			"weft-cni must be chained after the primary CNI plugin (no prevResult)", "")
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "weft-cni: cannot parse prevResult", err.Error())
	}
	return conf.PrevResult, nil
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, req, log, err := prepare(args, true)
	if err != nil {
		return err
	}
	prev, err := prevResult(conf)
	if err != nil {
		return err
	}
	if slices.Contains(conf.ExcludeNamespaces, req.Namespace) {
		log.Debug("ADD: namespace excluded, not enrolled", logkey.Pod, req.Namespace+"/"+req.Name)
		return types.PrintResult(prev, conf.CNIVersion)
	}
	var rep Reply
	if err := call(conf, PathAdd, req, &rep); err != nil {
		log.Error("ADD failed: the pod stays without network until the agent enrolls it", logkey.Pod, req.Namespace+"/"+req.Name, logkey.Error, err)
		return err
	}
	if rep.Enrolled {
		log.Info("ADD: enrolled", logkey.Pod, req.Namespace+"/"+req.Name, logkey.Cookie, rep.Cookie)
	} else {
		log.Info("ADD: not enrolled", logkey.Pod, req.Namespace+"/"+req.Name, logkey.Reason, rep.Reason)
	}
	return types.PrintResult(prev, conf.CNIVersion)
}

func cmdDel(args *skel.CmdArgs) error {
	conf, req, log, err := prepare(args, false)
	if err != nil {
		return err
	}
	if req.Namespace != "" && slices.Contains(conf.ExcludeNamespaces, req.Namespace) {
		return nil // never enrolled
	}
	err = call(conf, PathDel, req, nil)
	if errors.Is(err, errNoAgent) {
		// No agent socket: weft is not (or no longer) on this node, and
		// its map went with it. Nothing to remove.
		log.Info("DEL: no agent socket, nothing to remove", logkey.Path, conf.Socket)
		return nil
	}
	return err
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, req, _, err := prepare(args, true)
	if err != nil {
		return err
	}
	if _, err := prevResult(conf); err != nil {
		return err
	}
	if slices.Contains(conf.ExcludeNamespaces, req.Namespace) {
		return nil
	}
	var rep Reply
	return call(conf, PathCheck, req, &rep)
}

func cmdGC(args *skel.CmdArgs) error {
	conf, _, _, err := prepare(args, false)
	if err != nil {
		return err
	}
	var gc struct {
		Valid []struct {
			ContainerID string `json:"containerID"`
		} `json:"cni.dev/valid-attachments"`
	}
	if err := json.Unmarshal(args.StdinData, &gc); err != nil {
		return types.NewError(types.ErrDecodingFailure, "weft-cni: cannot parse cni.dev/valid-attachments", err.Error())
	}
	req := GCRequest{Node: conf.Node, ContainerID: []string{}}
	for _, v := range gc.Valid {
		req.ContainerID = append(req.ContainerID, v.ContainerID)
	}
	err = call(conf, PathGC, req, nil)
	if errors.Is(err, errNoAgent) {
		return nil
	}
	return err
}

func cmdStatus(args *skel.CmdArgs) error {
	conf, err := ParseConf(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "weft-cni: invalid network config", err.Error())
	}
	if err := call(conf, PathStatus, struct{ Node string }{conf.Node}, nil); err != nil {
		var te *types.Error
		if errors.As(err, &te) && te.Code == types.ErrTryAgainLater {
			te.Code = types.ErrPluginNotAvailable
		}
		return err
	}
	return nil
}

// unreachable reports whether err means no agent accepted the connection.
func unreachable(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED)
}

// errNoAgent marks a call that found no agent socket.
var errNoAgent = errors.New("no agent socket")

// call posts body to the agent and decodes its reply into out (if not nil).
// Every failure is a *types.Error: an agent that cannot be reached is
// ErrTryAgainLater (the runtime retries; the pod does not start meanwhile).
func call(conf *NetConf, path string, body, out any) error {
	retry := path == PathAdd || path == PathCheck
	ctx, cancel := context.WithTimeout(context.Background(), conf.timeout())
	defer cancel()
	b, err := json.Marshal(body)
	if err != nil {
		return types.NewError(types.ErrInternal, "weft-cni: encode request", err.Error())
	}
	c := http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", conf.Socket)
		},
	}}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://weft-agent"+path, bytes.NewReader(b))
	if err != nil {
		return types.NewError(types.ErrInternal, "weft-cni: build request", err.Error())
	}
	resp, err := c.Do(hreq)
	for err != nil && retry && ctx.Err() == nil && unreachable(err) {
		// The node's agent is restarting: wait for it within the timeout
		// rather than fail the sandbox at once.
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
		if hreq, err = http.NewRequestWithContext(ctx, http.MethodPost, "http://weft-agent"+path, bytes.NewReader(b)); err == nil {
			resp, err = c.Do(hreq)
		}
	}
	if err != nil {
		e := types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("weft-cni: the weft agent of node %s is unreachable at %s (the pod is not started unmeshed; the runtime retries)", conf.Node, conf.Socket),
			err.Error())
		if errors.Is(err, fs.ErrNotExist) {
			return errors.Join(e, errNoAgent)
		}
		return e
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, "weft-cni: read the agent's answer", err.Error())
	}
	if resp.StatusCode != http.StatusOK {
		var we WireError
		if json.Unmarshal(data, &we) != nil || we.Code == 0 {
			we = WireError{Code: types.ErrInternal, Message: "weft-cni: agent answered " + resp.Status, Details: string(data)}
		}
		return types.NewError(we.Code, we.Message, we.Details)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return types.NewError(types.ErrDecodingFailure, "weft-cni: decode the agent's answer", err.Error())
		}
	}
	return nil
}
