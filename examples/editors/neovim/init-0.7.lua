-- Cromwell in Neovim 0.7 to 0.10 (the vim.lsp.start_client API; no plugins needed).
--
-- Use it as your init file (`nvim -u init-0.7.lua`), or from your own init.lua:
--
--   vim.g.cromwell_manual_setup = true
--   local cromwell = dofile("/path/to/init-0.7.lua")
--   cromwell.setup({ init_options = { modelPath = "/path/to/model.safetensors" } })
--
-- What you get in Python buffers:
--   ghost text   typing pauses ask textDocument/inlineCompletion; the suggestion shows at
--                the end of the line, <C-l> in insert mode accepts it
--   completion   <C-x><C-o> (omnifunc) lists the same suggestion as textDocument/completion
--   K            hover: the signature and a one-paragraph explanation
--   <leader>ca   code actions ("Complete function body", "Add docstring", "Fix syntax
--                error"); the model runs when you pick one (codeAction/resolve)
--
-- Settings go in init_options (camelCase, as in the README): modelPath, maxTokens,
-- temperature, threads, debounceMs, idleMs, cacheBudgetMb, contextWindow, kvCache,
-- features.  As an init file it reads overrides of M.defaults from the global
-- `vim.g.cromwell`, e.g. `nvim --cmd "lua vim.g.cromwell = {cmd = {'/venv/bin/python',
-- '-m', 'cromwell_lsp'}, init_options = {modelPath = '/m/model.safetensors'}}" -u init-0.7.lua`.
-- Newer Neovim (0.11+): see init.lua beside this file.

local M = {}

M.defaults = {
  cmd = { "cromwell", "serve", "--stdio" },
  init_options = {},
  root_markers = { ".git", "pyproject.toml", "setup.py", "setup.cfg" },
  filetypes = { "python" },
  ghost_text = true,
  ghost_delay_ms = 150,
}

M.clients = {}      -- root folder -> client id
M.suggestions = {}  -- buffer -> { row, col, text } of the ghost text on show
local ns = vim.api.nvim_create_namespace("cromwell")

local function root_of(bufnr, markers)
  local path = vim.api.nvim_buf_get_name(bufnr)
  local dir = path ~= "" and vim.fn.fnamemodify(path, ":p:h") or vim.fn.getcwd()
  for _, marker in ipairs(markers) do
    local found = vim.fn.finddir(marker, dir .. ";")
    if found == "" then found = vim.fn.findfile(marker, dir .. ";") end
    if found ~= "" then return vim.fn.fnamemodify(found, ":p:h:h") end
  end
  return dir
end

-- Ghost text --------------------------------------------------------------------------
function M.clear(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  M.suggestions[bufnr] = nil
  vim.api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
end

local function show(bufnr, row, col, text)
  M.clear(bufnr)
  if text == "" then return end
  local lines = vim.split(text, "\n", true)
  local virt_lines = {}
  for i = 2, #lines do virt_lines[#virt_lines + 1] = { { lines[i], "Comment" } } end
  vim.api.nvim_buf_set_extmark(bufnr, ns, row, 0, {
    virt_text = { { lines[1], "Comment" } }, virt_text_pos = "eol",
    virt_lines = #virt_lines > 0 and virt_lines or nil,
  })
  M.suggestions[bufnr] = { row = row, col = col, text = text }
end

-- Ask for a suggestion at the cursor; `done(text)` is called with the answer.
function M.suggest(bufnr, done)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local params = vim.lsp.util.make_position_params()
  params.context = { triggerKind = 2 }  -- automatic
  local row, col = params.position.line, vim.api.nvim_win_get_cursor(0)[2]
  local tick = vim.api.nvim_buf_get_changedtick(bufnr)
  vim.lsp.buf_request(bufnr, "textDocument/inlineCompletion", params, function(err, result)
    if err or not result or vim.api.nvim_buf_get_changedtick(bufnr) ~= tick then return end
    local items = result.items or result
    local first = items[1]
    local text = first and (type(first.insertText) == "table" and first.insertText.value
                            or first.insertText) or ""
    show(bufnr, row, col, text)
    if done then done(text) end
  end)
end

-- Insert the suggestion on show at the place it was asked for.
function M.accept(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local s = M.suggestions[bufnr]
  if not s then return false end
  M.clear(bufnr)
  local lines = vim.split(s.text, "\n", true)
  vim.api.nvim_buf_set_text(bufnr, s.row, s.col, s.row, s.col, lines)
  local last_col = (#lines == 1 and s.col or 0) + #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { s.row + #lines, last_col })
  return true
end

local function ghost_text(bufnr, delay_ms)
  local timer = vim.loop.new_timer()
  vim.api.nvim_create_autocmd({ "TextChangedI", "TextChangedP" }, {
    buffer = bufnr,
    callback = function()
      M.clear(bufnr)
      timer:stop()
      timer:start(delay_ms, 0, vim.schedule_wrap(function()
        if vim.api.nvim_get_current_buf() == bufnr and vim.fn.mode() == "i" then M.suggest(bufnr) end
      end))
    end,
  })
  vim.api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, {
    buffer = bufnr, callback = function() timer:stop(); M.clear(bufnr) end,
  })
  vim.keymap.set("i", "<C-l>", function()
    if not M.accept(bufnr) then
      vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes("<C-l>", true, false, true), "n", false)
    end
  end, { buffer = bufnr, desc = "Cromwell: accept the suggestion" })
end

-- Attaching -----------------------------------------------------------------------------
function M.on_attach(client, bufnr, opts)
  vim.bo[bufnr].omnifunc = "v:lua.vim.lsp.omnifunc"
  local map = function(lhs, fn, desc)
    vim.keymap.set("n", lhs, fn, { buffer = bufnr, desc = "Cromwell: " .. desc })
  end
  map("K", vim.lsp.buf.hover, "explain")
  map("<leader>ca", vim.lsp.buf.code_action, "code actions")
  if opts.ghost_text then ghost_text(bufnr, opts.ghost_delay_ms) end
end

-- Start (or reuse) the server of the buffer's project and attach the buffer to it.
function M.attach(bufnr, opts)
  opts = opts or M.options or M.defaults
  local root = opts.root_dir or root_of(bufnr, opts.root_markers)
  local id = M.clients[root]
  if not id or not vim.lsp.get_client_by_id(id) then
    id = vim.lsp.start_client({
      name = "cromwell",
      cmd = opts.cmd,
      root_dir = root,
      init_options = opts.init_options,
      on_attach = function(client, b) M.on_attach(client, b, opts) end,
    })
    if not id then
      vim.notify("Cromwell: could not start " .. table.concat(opts.cmd, " "), vim.log.levels.ERROR)
      return nil
    end
    M.clients[root] = id
  end
  vim.lsp.buf_attach_client(bufnr, id)
  return id
end

-- Attach every buffer of the configured filetypes; opts override M.defaults.
function M.setup(opts)
  M.options = vim.tbl_deep_extend("force", M.defaults, opts or {})
  vim.api.nvim_create_autocmd("FileType", {
    group = vim.api.nvim_create_augroup("cromwell", { clear = true }),
    pattern = M.options.filetypes,
    callback = function(args) M.attach(args.buf, M.options) end,
  })
  return M
end

if not vim.g.cromwell_manual_setup then
  vim.cmd("filetype plugin on")
  M.setup(vim.g.cromwell)
end
package.loaded["cromwell"] = M  -- require("cromwell") reaches suggest/accept/attach
return M
