"""Chat templates (Jinja) used with the Qwen-VL processors; they share one rendering of a message's content parts.

* ``QWEN2VL_CHAT_TEMPLATE`` renders the Qwen2-VL instruct format: a default system turn, then
  ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, image parts as
  ``<|vision_start|><|image_pad|><|vision_end|>``, and ``<|im_start|>assistant\\n`` as the generation prompt.
  The tiny instruct model ships it, and the SFT baseline puts it on the base weights (as the paper did);
  tests/test_prompt_oracle.py shows it renders the recipes' prompts exactly as the published template does.
* ``QWEN3VL_CHAT_TEMPLATE`` is the Qwen3-VL instruct format for the tiny Qwen3-VL stand-in: the same turns with one
  visible difference, **no default system turn** (one appears only when the conversation starts with it). Its
  tool-calling and video-timestamp branches are left out: the recipes use neither. (Its tokenizer also makes
  ``<think>``/``</think>`` single, non-special tokens: see `data_prep.tiny_model`.)
* ``PLAIN_CHAT_TEMPLATE`` emits no role markers at all: the content parts of every message, in order, with the same
  image placeholders. The base-model prompt of the paper is role-free text; TRL only accepts images with
  conversational prompts, so a conversational prompt rendered through this template gives exactly the paper's text.
"""

# One message's content: a plain string as it is, or its parts in order (images and videos as their placeholders).
_CONTENT = (
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
)
_DEFAULT_SYSTEM = (
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
)
_TURN = "{{ '<|im_start|>' + message['role'] + '\\n' }}" + _CONTENT + "{{ '<|im_end|>\\n' }}"
_GENERATION_PROMPT = "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"

QWEN2VL_CHAT_TEMPLATE = (
    "{%- for message in messages -%}" + _DEFAULT_SYSTEM + _TURN + "{%- endfor -%}" + _GENERATION_PROMPT
)
QWEN3VL_CHAT_TEMPLATE = "{%- for message in messages -%}" + _TURN + "{%- endfor -%}" + _GENERATION_PROMPT
PLAIN_CHAT_TEMPLATE = "{%- for message in messages -%}" + _CONTENT + "{%- endfor -%}"
