/* hostkey.c - the server's host key against known_hosts (libssh reads the files: OpenSSH's
 * format, [host]:port and hashed entries). Unknown keys are refused unless the spec says
 * accept-new (recorded, in a file made 0600 whatever the umask) or off (not checked); either of
 * these leaves a note on the session for the embedder to say, as ssh says "Permanently added". */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* "ssh-ed25519 SHA256:..." of the server's key into s->hostkey_fp ("?" if none). */
static void fingerprint(sc_session *s)
{
    char fp[200] = "?";
    ssh_key key = NULL;
    if (ssh_get_server_publickey(s->ssh, &key) == SSH_OK) {
        unsigned char *hash = NULL;
        size_t hlen = 0;
        if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) == 0) {
            char *f = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
            if (f) {
                snprintf(fp, sizeof fp, "%s %s", ssh_key_type_to_char(ssh_key_type(key)), f);
                ssh_string_free_char(f);
            }
            ssh_clean_pubkey_hash(&hash);
        }
        ssh_key_free(key);
    }
    snprintf(s->hostkey_fp, sizeof s->hostkey_fp, "%s", fp);
}

/* The known_hosts file keys are recorded in: the spec's, else ~/.ssh/known_hosts. */
static void known_hosts_path(const sc_session *s, char *out, size_t cap)
{
    if (s->spec.known_hosts) {
        snprintf(out, cap, "%s", s->spec.known_hosts);
        return;
    }
    const char *home = getenv("HOME");
    snprintf(out, cap, "%s/.ssh/known_hosts", home ? home : "");
}

/* Creates path (and its directory) private to the user when it does not exist yet, so that
 * libssh's append never makes it world-writable under a loose umask. */
static void ensure_private_file(const char *path)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (mkdir(dir, 0700) == 0)
            chmod(dir, 0700);
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        fchmod(fd, 0600);
        close(fd);
    }
}

int sc_hostkey_check(sc_session *s, sc_err *err)
{
    fingerprint(s);
    const char *fp = s->hostkey_fp;
    if (s->spec.hostkey_mode == SC_HOSTKEY_OFF) {
        s->hostkey_note = SC_HOSTKEY_NOTE_UNCHECKED;
        return 0;
    }
    char path[512];
    known_hosts_path(s, path, sizeof path);
    enum ssh_known_hosts_e st = ssh_session_is_known_server(s->ssh);
    switch (st) {
    case SSH_KNOWN_HOSTS_OK:
        return 0;
    case SSH_KNOWN_HOSTS_CHANGED:
    case SSH_KNOWN_HOSTS_OTHER:
        sc_err_format(err, SC_EHOSTKEY, s->label, s->hop, "host key", "changed",
                      "HOST KEY HAS CHANGED (possible man-in-the-middle); server sent %s, "
                      "known_hosts has another",
                      fp);
        return -1;
    case SSH_KNOWN_HOSTS_UNKNOWN:
    case SSH_KNOWN_HOSTS_NOT_FOUND:
        if (s->spec.hostkey_mode == SC_HOSTKEY_ACCEPT_NEW) {
            ensure_private_file(path);
            if (ssh_session_update_known_hosts(s->ssh) != SSH_OK) {
                sc_err_format(err, SC_EHOSTKEY, s->label, s->hop, "host key", NULL,
                              "cannot record %s in %s: %s", fp, path, ssh_get_error(s->ssh));
                return -1;
            }
            s->hostkey_note = SC_HOSTKEY_NOTE_LEARNED;
            return 0;
        }
        sc_err_format(err, SC_EHOSTKEY, s->label, s->hop, "host key", "unknown",
                      "unknown host key %s (not in %s; use host_key=\"accept-new\" to learn it)",
                      fp, path);
        return -1;
    case SSH_KNOWN_HOSTS_ERROR:
    default:
        sc_err_format(err, SC_EHOSTKEY, s->label, s->hop, "host key", NULL, "cannot check: %s",
                      ssh_get_error(s->ssh));
        return -1;
    }
}
