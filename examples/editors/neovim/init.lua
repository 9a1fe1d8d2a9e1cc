-- Cromwell in Neovim 0.12+ (vim.lsp.config / vim.lsp.enable and the built-in
-- vim.lsp.inline_completion).  For Neovim 0.7 to 0.10 use init-0.7.lua beside this file;
-- that one is exercised by tests/test_neovim.py.  This file is NOT tested: the test
-- machines have Neovim 0.7, which lacks these APIs.
--
-- Put it in your config (e.g. ~/.config/nvim/plugin/cromwell.lua) and adjust cmd and
-- init_options.  What you get in Python buffers:
--   ghost text   shown while you type (textDocument/inlineCompletion); <Tab> accepts
--   completion   <C-x><C-o> or your completion plugin (textDocument/completion)
--   K            hover: the signature and a one-paragraph explanation
--   gra          code actions (Neovim resolves them: the model runs when you pick one)

vim.lsp.config("cromwell", {
  cmd = { "cromwell", "serve", "--stdio" },
  -- cmd = { "/path/to/venv/bin/python", "-m", "cromwell_lsp", "--stdio" },
  filetypes = { "python", "markdown" },
  root_markers = { ".git", "pyproject.toml", "setup.py", "setup.cfg" },
  init_options = {
    -- modelPath = "/path/to/model.safetensors",  -- empty: the shipped model
    maxTokens = 64,
    temperature = 0.0,
    debounceMs = 30,
  },
  -- workspace/didChangeConfiguration after a change: edit this table, then
  -- :lua vim.lsp.get_clients({name = "cromwell"})[1]:notify("workspace/didChangeConfiguration",
  --      {settings = {maxTokens = 32}})
})
vim.lsp.enable("cromwell")

vim.api.nvim_create_autocmd("LspAttach", {
  callback = function(args)
    local client = vim.lsp.get_client_by_id(args.data.client_id)
    if not client or client.name ~= "cromwell" then return end
    if client:supports_method("textDocument/inlineCompletion") then
      vim.lsp.inline_completion.enable(true, { bufnr = args.buf })
      vim.keymap.set("i", "<Tab>", function()
        if not vim.lsp.inline_completion.get() then return "<Tab>" end
      end, { buffer = args.buf, expr = true, desc = "Cromwell: accept the suggestion" })
    end
  end,
})
