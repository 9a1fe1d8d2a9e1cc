;;; cromwell.el --- Cromwell (local AI completions, code actions, hovers) through eglot  -*- lexical-binding: t; -*-

;; Works with Emacs 28 + eglot 1.9 (Debian: apt-get install emacs-nox elpa-eglot) and newer.
;;
;; Put this file on your load-path and add to your init file:
;;
;;   (require 'cromwell)
;;   (setq cromwell-initialization-options '(:modelPath "/path/to/model.safetensors"))
;;   (add-hook 'python-mode-hook #'eglot-ensure)
;;
;; What you get in Python buffers:
;;   completion   M-TAB / completion-at-point lists Cromwell's suggestion (textDocument/completion)
;;   ghost text   C-c c s shows a suggestion after point (textDocument/inlineCompletion, which
;;                eglot does not ask for itself); C-c c a accepts it, any other edit hides it
;;   hover        eldoc shows the signature and a one-paragraph explanation
;;   actions      C-c c c picks a Cromwell code action ("Complete function body", "Add
;;                docstring", "Fix syntax error"); the model runs when you pick one
;;                (codeAction/resolve, which eglot 1.9 does not send itself)
;;
;; Settings (camelCase, see the README): modelPath, maxTokens, temperature, threads,
;; debounceMs, idleMs, cacheBudgetMb, contextWindow, kvCache, features.  They go to the
;; server as initializationOptions, and `eglot-workspace-configuration' sends changes.

;;; Code:

(require 'eglot)
(require 'jsonrpc)
(require 'cl-lib)

(defgroup cromwell nil
  "Cromwell, a local AI assistant, through eglot."
  :group 'tools)

(defcustom cromwell-server-command '("cromwell" "serve" "--stdio")
  "Command line that starts the Cromwell language server.
For an interpreter of your choice: (\"/venv/bin/python\" \"-m\" \"cromwell_lsp\")."
  :type '(repeat string))

(defcustom cromwell-initialization-options nil
  "Plist of Cromwell settings sent as initializationOptions, e.g. (:maxTokens 32)."
  :type 'plist)

(defcustom cromwell-modes '(python-mode python-ts-mode)
  "Major modes served by Cromwell."
  :type '(repeat symbol))

(defun cromwell--contact (&optional _interactive)
  "The eglot contact: the server command plus the initialization options."
  (append cromwell-server-command
          (list :initializationOptions (or cromwell-initialization-options
                                           (make-hash-table)))))

(add-to-list 'eglot-server-programs (cons cromwell-modes #'cromwell--contact))

(defun cromwell--server ()
  (eglot--current-server-or-lose))

(defun cromwell--position-params ()
  (list :textDocument (eglot--TextDocumentIdentifier)
        :position (eglot--pos-to-lsp-position (point))))

;;;; Ghost text ------------------------------------------------------------------------

(defvar-local cromwell--overlay nil "The overlay that shows the suggestion.")

(defun cromwell-clear ()
  "Hide the suggestion."
  (interactive)
  (when cromwell--overlay
    (delete-overlay cromwell--overlay)
    (setq cromwell--overlay nil))
  (remove-hook 'before-change-functions #'cromwell--on-change t))

(defun cromwell--on-change (&rest _)
  (cromwell-clear))

(defun cromwell-inline-suggestion ()
  "Ask the server for an inline completion at point; the text, or nil."
  (let* ((result (jsonrpc-request (cromwell--server) :textDocument/inlineCompletion
                                  (append (cromwell--position-params)
                                          (list :context (list :triggerKind 1)))))
         (items (if (vectorp result) result (plist-get result :items)))
         (first (and items (> (length items) 0) (aref items 0)))
         (text (and first (plist-get first :insertText))))
    (if (stringp text) text (and text (plist-get text :value)))))

(defun cromwell-suggest ()
  "Show Cromwell's suggestion after point as ghost text."
  (interactive)
  (cromwell-clear)
  (let ((text (cromwell-inline-suggestion)))
    (when (and text (not (string-empty-p text)))
      (setq cromwell--overlay (make-overlay (point) (point) nil t))
      (overlay-put cromwell--overlay 'cromwell-text text)
      (overlay-put cromwell--overlay 'after-string (propertize text 'face 'shadow))
      (add-hook 'before-change-functions #'cromwell--on-change nil t))
    text))

(defun cromwell-accept ()
  "Insert the suggestion on show; nil when there is none."
  (interactive)
  (when cromwell--overlay
    (let ((text (overlay-get cromwell--overlay 'cromwell-text))
          (at (overlay-start cromwell--overlay)))
      (cromwell-clear)
      (goto-char at)
      (insert text)
      t)))

;;;; Code actions, resolved ------------------------------------------------------------

(defun cromwell-code-actions (&optional beg end)
  "The code actions the server lists for BEG..END (default: point)."
  (let ((beg (or beg (point))) (end (or end beg)))
    (append (jsonrpc-request
             (cromwell--server) :textDocument/codeAction
             (list :textDocument (eglot--TextDocumentIdentifier)
                   :range (list :start (eglot--pos-to-lsp-position beg)
                                :end (eglot--pos-to-lsp-position end))
                   :context (list :diagnostics [])))
            nil)))

(defun cromwell-apply-code-action (action)
  "Resolve ACTION (the model runs) and apply its edit; the resolved action."
  (let* ((resolved (if (plist-get action :edit)
                       action
                     (jsonrpc-request (cromwell--server) :codeAction/resolve action
                                      :timeout 300)))
         (edit (plist-get resolved :edit)))
    (if edit
        (eglot--apply-workspace-edit edit)
      (message "Cromwell: %s produced no edit" (plist-get action :title)))
    resolved))

(defun cromwell-code-action (&optional title)
  "Pick one of Cromwell's code actions at point (or the one named TITLE) and apply it."
  (interactive)
  (let* ((actions (or (cromwell-code-actions) (user-error "Cromwell: no code actions here")))
         (titles (mapcar (lambda (a) (plist-get a :title)) actions))
         (title (or title (completing-read "Cromwell action: " titles nil t)))
         (action (cl-find title actions :key (lambda (a) (plist-get a :title)) :test #'equal)))
    (unless action (user-error "Cromwell: no action %S here" title))
    (cromwell-apply-code-action action)))

(defvar cromwell-mode-map
  (let ((map (make-sparse-keymap)))
    (define-key map (kbd "C-c c s") #'cromwell-suggest)
    (define-key map (kbd "C-c c a") #'cromwell-accept)
    (define-key map (kbd "C-c c c") #'cromwell-code-action)
    map)
  "Keys of `cromwell-mode'.")

(define-minor-mode cromwell-mode
  "Cromwell's keys (suggest, accept, code action) in an eglot-managed buffer."
  :keymap cromwell-mode-map)

(add-hook 'eglot-managed-mode-hook
          (lambda () (when (memq major-mode cromwell-modes) (cromwell-mode (if eglot--managed-mode 1 -1)))))

(provide 'cromwell)
;;; cromwell.el ends here
