"""Chat templates (Jinja) used with Qwen2-VL processors.

* ``QWEN2VL_CHAT_TEMPLATE`` renders the Qwen2-VL instruct format: a default system turn, then
  ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, image parts as
  ``<|vision_start|><|image_pad|><|vision_end|>``, and ``<|im_start|>assistant\\n`` as the generation prompt.
  The tiny instruct model ships it, and the SFT baseline puts it on the base weights (as the paper did).
* ``PLAIN_CHAT_TEMPLATE`` emits no role markers at all: the content parts of every message, in order, with the same
  image placeholders. The base-model prompt of the paper is role-free text; TRL only accepts images with
  conversational prompts, so a conversational prompt rendered through this template gives exactly the paper's text.
"""

QWEN2VL_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

PLAIN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endfor -%}"
)
