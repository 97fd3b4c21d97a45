package echo

// echo-basic's TCP (TCP_ECHO_SERVER) and UDP (UDP_ECHO_SERVER) servers, whose answers
// the suite reads with the types of the images' tcpserver and udpechoserver packages.

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// TCPWelcome is the first line the TCP echo writes on every connection.
const TCPWelcome = "Gateway API Test TCP Server\n"

// TCPAnswer is the one-line JSON answer to "TEST".
type TCPAnswer struct {
	Namespace string  `json:"namespace"`
	Ingress   string  `json:"ingress"`
	Service   string  `json:"service"`
	Pod       string  `json:"pod"`
	TCPPort   string  `json:"tcpport"`
	TLSPort   string  `json:"tlsport,omitempty"`
	IsTLS     bool    `json:"isTLS"`
	TLS       *TCPTLS `json:"tls,omitempty"`
}

// TCPTLS describes the TLS connection of a TCP answer.
type TCPTLS struct {
	Version            string `json:"version"` // crypto/tls.VersionName: "TLS 1.3"
	ServerName         string `json:"serverName"`
	NegotiatedProtocol string `json:"negotiatedProtocol,omitempty"`
	Curves             string `json:"curves,omitempty"`
	CipherSuite        string `json:"cipherSuite"`
}

// serveTCPConn greets the client, then answers its lines until it leaves:
// "PING" → "PONG", "IS_TLS" → "true"/"false", "TEST" → the TCPAnswer; other lines
// get nothing.
func serveTCPConn(c net.Conn, answer TCPAnswer, log *slog.Logger) {
	defer c.Close()
	if tc, ok := c.(*tls.Conn); ok {
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			log.Info("TLS handshake failed", "remote", c.RemoteAddr().String(), "error", err)
			return
		}
		_ = tc.SetDeadline(time.Time{})
		cs := tc.ConnectionState()
		answer.IsTLS = true
		answer.TLS = &TCPTLS{
			Version:            tls.VersionName(cs.Version),
			ServerName:         cs.ServerName,
			NegotiatedProtocol: cs.NegotiatedProtocol,
			Curves:             cs.CurveID.String(),
			CipherSuite:        tls.CipherSuiteName(cs.CipherSuite),
		}
	}
	test, err := json.Marshal(answer)
	if err != nil {
		return
	}
	if _, err := io.WriteString(c, TCPWelcome); err != nil {
		return
	}
	lines := bufio.NewScanner(c)
	for lines.Scan() {
		var out string
		switch lines.Text() {
		case "TEST":
			out = string(test) + "\n"
		case "IS_TLS":
			out = fmt.Sprintf("%t\n", answer.IsTLS)
		case "PING":
			out = "PONG\n"
		default:
			continue
		}
		if _, err := io.WriteString(c, out); err != nil {
			return
		}
	}
}

// resetTCPConn closes c with a TCP RST (TCP_MODE=RESET).
func resetTCPConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

// basicTCPServers listens on TCP_PORT and, with a key pair, TLS_PORT (TLS 1.2 and up).
func basicTCPServers(cfg BasicConfig) ([]server, error) {
	answer := TCPAnswer{
		Namespace: cfg.Identity.Namespace, Ingress: cfg.Identity.Ingress,
		Service: cfg.Identity.Service, Pod: cfg.Identity.Pod,
		TCPPort: cfg.TCPPort, TLSPort: cfg.TLSPort,
	}
	handle := func(c net.Conn) { serveTCPConn(c, answer, cfg.log()) }
	if cfg.TCPReset {
		handle = resetTCPConn
	}
	var servers []server
	add := func(name, port string, tlsCfg *tls.Config) error {
		l, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, port))
		if err != nil {
			stopAll(servers)
			return fmt.Errorf("listen %s: %w", name, err)
		}
		if tlsCfg != nil {
			l = tls.NewListener(l, tlsCfg)
		}
		conns := &connSet{m: map[net.Conn]struct{}{}}
		servers = append(servers, server{
			name: name, addr: l.Addr().String(),
			serve: func() error { return acceptLoop(l, conns, handle) },
			stop:  func() { l.Close(); conns.closeAll() },
		})
		return nil
	}
	if err := add("tcp", cfg.TCPPort, nil); err != nil {
		return nil, err
	}
	if cfg.TLS() {
		tlsCfg, err := serverTLS(cfg.CertFile, cfg.KeyFile, "")
		if err != nil {
			stopAll(servers)
			return nil, err
		}
		tlsCfg.MinVersion = tls.VersionTLS12
		if err := add("tcp-tls", cfg.TLSPort, tlsCfg); err != nil {
			return nil, err
		}
	}
	return servers, nil
}

// acceptLoop hands every connection to handle until l is closed.
func acceptLoop(l net.Listener, conns *connSet, handle func(net.Conn)) error {
	for {
		c, err := l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		conns.add(c)
		go func() {
			defer conns.remove(c)
			handle(c)
		}()
	}
}

// connSet tracks open connections so that stopping a server ends them.
type connSet struct {
	mu sync.Mutex
	m  map[net.Conn]struct{}
}

func (s *connSet) add(c net.Conn)    { s.mu.Lock(); s.m[c] = struct{}{}; s.mu.Unlock() }
func (s *connSet) remove(c net.Conn) { s.mu.Lock(); delete(s.m, c); s.mu.Unlock() }
func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.m {
		c.Close()
	}
}

// UDPAnswer is the JSON datagram sent back for every datagram: Request is the payload
// received (at most 1 KiB of it, as echo-basic reads).
type UDPAnswer struct {
	Request   string `json:"request"`
	Namespace string `json:"namespace"`
	Ingress   string `json:"ingress"`
	Service   string `json:"service"`
	Pod       string `json:"pod"`
}

// basicUDPServers listens on UDP_PORT.
func basicUDPServers(cfg BasicConfig) ([]server, error) {
	pc, err := net.ListenPacket("udp", net.JoinHostPort(cfg.Host, cfg.UDPPort))
	if err != nil {
		return nil, fmt.Errorf("listen udp: %w", err)
	}
	id := cfg.Identity
	serve := func() error {
		buf := make([]byte, 1024)
		for {
			n, from, err := pc.ReadFrom(buf)
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if err != nil {
				cfg.log().Info("read udp", "error", err)
				continue
			}
			out, err := json.Marshal(UDPAnswer{Request: string(buf[:n]), Namespace: id.Namespace, Ingress: id.Ingress, Service: id.Service, Pod: id.Pod})
			if err != nil {
				continue
			}
			if _, err := pc.WriteTo(out, from); err != nil {
				cfg.log().Info("write udp", "to", from.String(), "error", err)
			}
		}
	}
	return []server{{name: "udp", addr: pc.LocalAddr().String(), serve: serve, stop: func() { pc.Close() }}}, nil
}
