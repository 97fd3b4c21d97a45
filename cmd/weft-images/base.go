package main

// baseEntries are the files every image starts from (no base image is pulled):
// the two users (root and nonroot, 65532), name resolution from /etc/hosts then
// DNS, a sticky /tmp and nonroot's home.
func baseEntries() []entry {
	return []entry{
		{Name: "etc/", Mode: 0o755},
		{Name: "etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{Name: "etc/nsswitch.conf", Mode: 0o644, Data: []byte("hosts: files dns\n")},
		{Name: "etc/passwd", Mode: 0o644, Data: []byte(
			"root:x:0:0:root:/root:/sbin/nologin\n" +
				"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{Name: "home/", Mode: 0o755},
		{Name: "home/nonroot/", Mode: 0o700, UID: 65532, GID: 65532},
		{Name: "tmp/", Mode: 0o1777},
	}
}

// binaryEntries installs files (name -> contents) in /usr/local/bin, owned by root.
func binaryEntries(files map[string][]byte) []entry {
	out := []entry{{Name: "usr/", Mode: 0o755}, {Name: "usr/local/", Mode: 0o755}, {Name: binDir, Mode: 0o755}}
	for name, data := range files {
		out = append(out, entry{Name: binDir + name, Mode: 0o755, Data: data})
	}
	return out
}
