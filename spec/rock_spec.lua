-- rock_spec: the rock as a user gets it: `luarocks make` of the rockspec from a clean copy of the
-- sources into a fresh tree, `luarocks pack` of what it installed, that rock installed into
-- another fresh tree, and the library required from plain lua5.4 there (each submodule first
-- too); a source rock packed from the rockspec (its source a tagged clone) built and installed.
-- Offline here, so dependencies are not fetched (--deps-mode none: Debian's lua-argparse and
-- lua-cjson provide them).
local H = require "helper"

local function sh(cmd)
  local out, rc = H.sh(cmd .. " 2>&1")
  assert.are.equal(0, rc, cmd .. ":\n" .. out)
  return out
end

describe("the rock", function()
  local work
  setup(function()
    work = H.tmpname() .. ".rock"
    sh("mkdir -p " .. work .. "/src")
    -- the sources git knows (and new files not ignored), without build/
    sh("git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C " .. work .. "/src")
  end)
  teardown(function() os.execute("rm -rf " .. work) end)

  it("builds and installs with luarocks make, packs, installs the packed rock elsewhere, and loads", function()
    local rockspec = "rockspec/sshchain-0.1.0-1.rockspec"
    local out = sh(("cd %s/src && luarocks --lua-version 5.4 make --deps-mode none --tree %s/t1 %s")
      :format(work, work, rockspec))
    assert.matches("sshchain 0.1.0%-1 is now installed", out)
    out = sh(("cd %s && luarocks --lua-version 5.4 pack --tree %s/t1 sshchain"):format(work, work))
    local rock = assert(out:match("Packed: (%S+%.rock)"), out)
    out = sh(("luarocks --lua-version 5.4 install --deps-mode none --tree %s/t2 %s"):format(work, rock))
    assert.matches("is now installed", out)
    local env = ("cd /tmp && LUA_PATH=';;' LUA_CPATH=%q "):format(work .. "/t2/lib/lua/5.4/?.so")
    out = sh(env .. [[lua5.4 -e 'local s = require "sshchain"; io.write(s._VERSION, " ", s.shell_quote("a b"))']])
    assert.are.equal("sshchain 0.1.0 'a b'", out)
    for _, m in ipairs { "sshchain.inventory", "sshchain.config", "sshchain.luv", "sshchain.process" } do
      out = sh(env .. ("lua5.4 -e 'io.write(type(require %q))'"):format(m))
      assert.are.equal("table", out, m)
    end
    out = sh(work .. "/t2/bin/sshlua -v")
    assert.matches("^sshlua 0%.1%.0", out)
  end)

  it("packs a source rock from the rockspec, which builds and installs into a fresh tree", function()
    -- the rockspec's source is a tag of the repository: here a local clone, tagged, stands in
    -- for the published one (nothing leaves this machine)
    local repo = work .. "/repo"
    sh(("git clone -q %s %s && git -C %s tag v0.1.0"):format(H.root, repo, repo))
    local spec = H.readfile(H.root .. "/rockspec/sshchain-0.1.0-1.rockspec")
    local url = spec:match('url = "([^"]+)"')
    assert.matches("^git%+https://", url)
    H.writefile(work .. "/sshchain-0.1.0-1.rockspec", (spec:gsub(url:gsub("%p", "%%%0"), "git+file://" .. repo)))
    local out = sh(("cd %s && luarocks --lua-version 5.4 pack sshchain-0.1.0-1.rockspec"):format(work))
    local rock = assert(out:match("Packed: (%S+%.src%.rock)"), out)
    out = sh(("cd %s && luarocks --lua-version 5.4 install --deps-mode none --tree %s/t3 %s"):format(work, work, rock))
    assert.matches("is now installed", out)
    out = sh(("cd /tmp && LUA_PATH=';;' LUA_CPATH=%q lua5.4 -e 'io.write(require(\"sshchain\")._VERSION)'")
      :format(work .. "/t3/lib/lua/5.4/?.so"))
    assert.are.equal("sshchain 0.1.0", out)
  end)

  it("says what it needs: argparse, lua-cjson, libssh, libuv and OpenSSL, and a test command", function()
    local spec = {}
    assert(loadfile(H.root .. "/rockspec/sshchain-0.1.0-1.rockspec", "t", spec))()
    assert.are.same({ "lua >= 5.4, < 5.5", "argparse >= 0.7", "lua-cjson >= 2.1" }, spec.dependencies)
    assert.are.same({ "LIBSSH", "LIBUV", "OPENSSL" },
      (function() local k = {} for n in pairs(spec.external_dependencies) do k[#k + 1] = n end table.sort(k) return k end)())
    assert.matches("^git%+https://", spec.source.url)
    assert.is_string(spec.source.tag)
    assert.are.equal("make test-unit", spec.test.command)
  end)
end)
