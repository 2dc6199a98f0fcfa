// Package daemon starts, waits for and stops the private dockerd that a put
// uses to load, build and push images; it knows nothing of builds.
//
// # Isolation
//
// Every daemon gets a short state folder of its own (default /tmp/dkd-NNN:
// unix socket paths must stay under 108 bytes) holding its API socket,
// exec-root, pidfile, daemon.json, logs, the certs.d folder and a containerd
// of its own (root, state, socket and opt folder). Passing --containerd
// keeps dockerd 20.10 from silently reusing an existing
// /run/containerd/containerd.sock, and --config-file keeps it from reading the
// host's /etc/docker/daemon.json.
//
// dockerd and containerd still write to fixed paths (/run/docker/plugins,
// the shim sockets in /run/containerd/s, /etc/docker/key.json on 20.10, and
// certificates are only read from /etc/docker/certs.d). So both run in a
// private mount namespace, made by one OS thread of this process that
// unshares its mount namespace and then starts them (a child inherits the
// namespace of the thread that forks it). In that namespace:
//   - / is made recursively private, so no mount dockerd makes (overlay
//     layers, the netns nsfs mount) reaches the rest of the system, and all of
//     them vanish with the namespace;
//   - /run is a tmpfs that re-binds every existing entry except docker's and
//     containerd's;
//   - /etc/docker is a tmpfs that re-binds the existing entries except
//     certs.d, where the daemon's own certs.d folder is bind-mounted (when
//     /etc/docker does not exist, /etc gets the same treatment, so nothing is
//     created on the real filesystem);
//   - in a container (see below), the cgroup v1 hierarchies are re-mounted
//     read-write.
//
// Containers get their cgroups under a parent named after the state folder
// (cgroupfs driver), so Stop can kill and remove whatever is left.
//
// # daemon.json
//
// The daemon's own daemon.json pins the classic image store
// (features.containerd-snapshotter false: Docker 29 would otherwise use the
// containerd store, where image IDs are manifest digests, not config
// digests) and points deprecated-key-path into the state folder (20.10 would
// write /etc/docker/key.json). 20.10 rejects unknown top-level keys but not
// unknown feature names, and dockerd ignores deprecated-key-path since
// 22.06, so one file fits every version without asking dockerd for its
// version (200 ms); a dockerd that rejects the key is started again without
// it.
//
// # Data root
//
// /scratch is a Concourse volume on the worker's real filesystem; the
// container's own root is overlayfs, where overlay2 cannot work and dockerd
// silently falls back to vfs (a full copy of every layer). So the data root
// is /scratch/docker when /scratch exists, and a folder inside the state
// folder otherwise. /scratch/docker is kept on Stop: Concourse throws the
// volume away with the container, deleting gigabytes of layers first would
// only slow every put down, and an intercepted container keeps what the
// daemon had. A second daemon started while /scratch/docker is in use (it is
// locked with flock) gets a fresh /scratch/docker-NNN, removed on Stop. Any
// data root inside the state folder is removed on Stop; one given in
// Options.DataRoot is kept.
//
// # Cgroups
//
// A daemon nested in a container needs cgroup work first: on cgroup v1 the
// hierarchies re-mounted read-write (in the private namespace only), on
// cgroup v2 every process of the container's root cgroup moved into a child
// cgroup ("init") and the controllers enabled in cgroup.subtree_control.
// That must never happen on a host (it would move the host's processes), so
// it runs only when the resource image's Dockerfile sets
// DOCKER_IMAGE_RESOURCE_IN_CONTAINER=1. On cgroup v2 without a cgroup
// namespace it works on the process's own cgroup, never on its parents.
//
// # Networking
//
// Production (Options.Isolated false) uses dockerd's default bridge, so RUN
// steps of a build have network. dockerd then adds iptables chains and a
// MASQUERADE rule, which stay after it exits; inside the resource container
// they live in the container's own network namespace and go with it.
// Isolated runs with --bridge=none --iptables=false --ip6tables=false
// --ip-masq=false --ip-forward=false: nothing in the network namespace
// changes, which tests on a host need, but containers (RUN steps) have no
// network unless they use the host network. PrivateNetwork keeps production
// networking but moves the daemon into a throwaway network namespace, so a
// test on a host can use bridges and user-defined networks; its containers
// reach one another, never the outside.
//
// # Lifetime
//
// Start's context bounds only the start: once Start returns, the daemon runs
// until Stop. Stop is idempotent and meant for a defer with a fresh context
// (the put cancels its context on SIGTERM): the context bounds the graceful
// part (SIGTERM, wait); the cleanup (SIGKILL of what is left, cgroups, state
// folder) always runs. Before SIGTERM, Stop kills the containers and waits
// (up to 2 s) until dockerd has finished every API request the client
// closed: dockerd 23+ otherwise waits 5 s after its own shutdown for them.
// With the logger at debug level, Stop logs how long each daemon took to
// stop and then dockerd's log, which goes with the state folder. dockerd
// and containerd get SIGTERM from the kernel if this process dies without
// Stop; their shims and containers do not. In the resource container they go
// with the container; on a host (tests), Reap removes them, their cgroups
// and the state folder later (test/testenv does it for a test binary killed
// at its timeout).
package daemon
