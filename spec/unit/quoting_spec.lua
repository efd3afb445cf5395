-- unit: quoting for the remote shell, checked against a real /bin/sh.
local sshchain = require "sshchain"

describe("shell quoting", function()
  it("survives the shell for quotes, spaces, $, backquotes and newlines", function()
    for _, s in ipairs { "plain", "it's", "a b", "$HOME", "`id`", "x\ny", "'\"'", "", "--", "*" } do
      local p = io.popen("printf %s " .. sshchain.shell_quote(s))
      local out = p:read("a")
      p:close()
      assert.are.equal(s, out)
    end
  end)
end)
