// Package browser drives Debian's headless Chromium for the tests of
// weftctl dashboard (test/deps.sh test installs it): it loads a page, lets
// its scripts run, and returns the DOM or a screenshot.
package browser

import (
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
)

// ErrNoChromium: chromium is not on PATH.
var ErrNoChromium = errors.New("chromium is not installed: run test/deps.sh test")

// Chromium is a headless Chromium binary.
type Chromium struct{ bin string }

// Find looks chromium up on PATH.
func Find() (Chromium, error) {
	p, err := exec.LookPath("chromium")
	if err != nil {
		return Chromium{}, ErrNoChromium
	}
	return Chromium{bin: p}, nil
}

// args: no sandbox (tests run as root), and five seconds of the page's
// time for its fetches and timers before the DOM or picture is taken.
func (c Chromium) args(extra ...string) []string {
	return append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"}, extra...)
}

// DOM loads url and returns the DOM after its scripts ran.
func (c Chromium) DOM(url string) ([]byte, error) {
	out, err := exec.Command(c.bin, c.args("--dump-dom", url)...).Output()
	if err != nil {
		return nil, fmt.Errorf("chromium --dump-dom %s: %w", url, err)
	}
	return out, nil
}

// Screenshot loads url and writes a 1000x640 PNG to path.
func (c Chromium) Screenshot(url, path string) error {
	if out, err := exec.Command(c.bin, c.args("--window-size=1000,640", "--screenshot="+path, url)...).CombinedOutput(); err != nil {
		return fmt.Errorf("chromium --screenshot: %w\n%s", err, out)
	}
	return nil
}

// Backend is one row of the dashboard's backend table.
type Backend struct {
	Name     string
	Share    float64 // percent
	Requests int
}

var backendRow = regexp.MustCompile(`data-backend="([^"]+)" data-share="([0-9.]+)" data-requests="([0-9.]+)"`)

// Backends reads the backend rows of a weftctl dashboard page's DOM.
func Backends(dom []byte) []Backend {
	var out []Backend
	for _, m := range backendRow.FindAllSubmatch(dom, -1) {
		share, _ := strconv.ParseFloat(string(m[2]), 64)
		n, _ := strconv.Atoi(string(m[3]))
		out = append(out, Backend{Name: string(m[1]), Share: share, Requests: n})
	}
	return out
}
